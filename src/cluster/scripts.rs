//! The Lua scripts a node runs in Redis. Each is one atomic step: Redis runs a script to the
//! end before anything else, so a script's checks and writes cannot interleave with another
//! node's. Sent with EVAL (Redis caches the compiled script by its hash), so a Redis restart,
//! which empties the script cache, needs no reload step.
//!
//! Every script answers with a table whose first element says what happened, never with an
//! error reply, so one pipeline's answers map one to one onto its requests.

/// SEND / DM. KEYS: room hash, room log (stream), room members, the client id's key (or `""`).
/// ARGV: sender, body, origin (`node:token`), the poster's epoch, client-id TTL (s), the
/// post's fingerprint, the DM recipient (or `""`), the log's length cap (0: none), the room's
/// channel, 16 random hex digits for the id (variant bits set), the room's name.
///
/// In order: a known client id answers with what it published (nothing else happens); a room
/// that is gone (Redis lost its data) or has another epoch is refused; a non-member is refused;
/// then the next seq, a time that never goes back within the room (the room's last `ms`, plus a
/// counter in the id's 12 `rand_a` bits within one millisecond, so ids sort in seq order), the
/// log entry with id `<seq>-0`, the publish, and the client id for its window.
pub const SEND: &str = r#"
if KEYS[4] ~= '' then
  local original = redis.call('GET', KEYS[4])
  if original then return {'earlier', original} end
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {'gone'} end
if epoch ~= ARGV[4] then return {'epoch', epoch} end
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 0 then return {'not-member'} end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local last = tonumber(redis.call('HGET', KEYS[1], 'ms') or '0')
local counter = 0
if ms <= last then
  ms = last
  counter = tonumber(redis.call('HGET', KEYS[1], 'ctr') or '0') + 1
  if counter > 4095 then
    ms = ms + 1
    counter = 0
  end
end
redis.call('HSET', KEYS[1], 'ms', ms, 'ctr', counter)
local hex = string.format('%08x%04x', math.floor(ms / 65536), ms % 65536)
local r = ARGV[10]
local id = string.sub(hex, 1, 8) .. '-' .. string.sub(hex, 9, 12) .. '-7' ..
  string.format('%03x', counter) .. '-' .. string.sub(r, 1, 4) .. '-' .. string.sub(r, 5, 16)
redis.call('XADD', KEYS[2], seq .. '-0', 'id', id, 't', ms, 'from', ARGV[1], 'o', ARGV[3],
  'body', ARGV[2])
local cap = tonumber(ARGV[8])
if cap > 0 then redis.call('XTRIM', KEYS[2], 'MAXLEN', cap) end
redis.call('PUBLISH', ARGV[9], 'M ' .. seq .. ' ' .. ms .. ' ' .. id .. ' ' .. ARGV[3] .. ' ' ..
  ARGV[1] .. ' ' .. ARGV[2])
if KEYS[4] ~= '' then
  redis.call('SET', KEYS[4], ARGV[11] .. ' ' .. seq .. ' ' .. id .. ' ' .. ARGV[6] .. ' ' .. ARGV[7],
    'EX', ARGV[5])
end
return {'posted', tostring(seq), id, tostring(ms)}
"#;

/// A room, made if missing. KEYS: room hash, log, members, reads, invites. ARGV: kind, a
/// fresh epoch, owner (or `""`). A room made anew drops any log, members, reads and invites
/// left under its name (only possible after Redis lost the room's hash): its seqs restart
/// under a new epoch, so clients are told with `EPOCH`, never silently. Answers the room:
/// `{made, fields, members, reads, invites}`.
pub const ROOM: &str = r#"
local made = 0
if ARGV[1] ~= '' and redis.call('HSETNX', KEYS[1], 'epoch', ARGV[2]) == 1 then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  redis.call('HSET', KEYS[1], 'seq', 0, 'kind', ARGV[1], 'owner', ARGV[3], 'private', 0)
  made = 1
end
return {made, redis.call('HGETALL', KEYS[1]), redis.call('SMEMBERS', KEYS[3]),
  redis.call('HGETALL', KEYS[4]), redis.call('SMEMBERS', KEYS[5])}
"#;

/// JOIN. KEYS: room members, the user's rooms, room hash. ARGV: user, room, room channel,
/// node, the user's sessions channel. A new member is announced on the room's channel with the
/// room's seq at the join (`J <user> <node> <seq>`), and on the user's sessions channel (`J
/// <room> <node> <seq>`, for nodes with sessions of the user that do not follow the room; see
/// `cluster::control`).
pub const JOIN: &str = r#"
redis.call('SADD', KEYS[2], ARGV[2])
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  local seq = redis.call('HGET', KEYS[3], 'seq') or '0'
  redis.call('PUBLISH', ARGV[3], 'J ' .. ARGV[1] .. ' ' .. ARGV[4] .. ' ' .. seq)
  redis.call('PUBLISH', ARGV[5], 'J ' .. ARGV[2] .. ' ' .. ARGV[4] .. ' ' .. seq)
end
return {'ok'}
"#;

/// LEAVE (and KICK). KEYS: room members, the user's rooms, room reads. ARGV: user, room,
/// channel, node. A member who goes is announced (`L <user> <node>`).
pub const LEAVE: &str = r#"
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[1])
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('PUBLISH', ARGV[3], 'L ' .. ARGV[1] .. ' ' .. ARGV[4])
end
return {'ok'}
"#;

/// PRIVATE. KEYS: room hash. ARGV: `1`/`0`, room channel, node. Announced (`A <node> <1|0>`)
/// so every node that follows the room admits and hides as the owner said, at once.
pub const ACCESS: &str = r#"
redis.call('HSET', KEYS[1], 'private', ARGV[1])
redis.call('PUBLISH', ARGV[2], 'A ' .. ARGV[3] .. ' ' .. ARGV[1])
return {'ok'}
"#;

/// INVITE. KEYS: room invites, room hash. ARGV: user, room channel, node, the user's sessions
/// channel, room. Announced (`I <user> <node> <owner>`): the invitee's sessions on every node
/// are told, and every node lets them join. Only the owner invites, so the owner is who
/// invited. Also on the user's sessions channel (`I <room> <node> <owner>`), for the nodes
/// with sessions of the invitee that do not follow the room (`cluster::control`).
pub const INVITE: &str = r#"
redis.call('SADD', KEYS[1], ARGV[1])
local owner = redis.call('HGET', KEYS[2], 'owner') or ''
redis.call('PUBLISH', ARGV[2], 'I ' .. ARGV[1] .. ' ' .. ARGV[3] .. ' ' .. owner)
redis.call('PUBLISH', ARGV[4], 'I ' .. ARGV[5] .. ' ' .. ARGV[3] .. ' ' .. owner)
return {'ok'}
"#;

/// KICK's first half (the invitation withdrawn; the membership goes with [`LEAVE`], queued
/// right after). KEYS: room invites, room hash. ARGV: user, room channel, node. Announced (`K
/// <user> <node> <owner>`) before LEAVE's `L`, so the kicked user's sessions on every node
/// are told `KICKED` and the other members `LEFT`, as on the node that kicked.
pub const UNINVITE: &str = r#"
redis.call('SREM', KEYS[1], ARGV[1])
local owner = redis.call('HGET', KEYS[2], 'owner') or ''
redis.call('PUBLISH', ARGV[2], 'K ' .. ARGV[1] .. ' ' .. ARGV[3] .. ' ' .. owner)
return {'ok'}
"#;

/// KEY / REVOKE. KEYS: the user's key hash. ARGV: device, `<key> <added>` (or `""`: revoked),
/// the user's key channel, node. Announced (`<node> <device> [<key> <added>]`) so every node
/// tells its sessions of the user's DM peers (`cluster::device_keys`).
pub const DEVICE_KEY: &str = r#"
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' ' .. ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' ' .. ARGV[1] .. ' ' .. ARGV[2])
end
return {'ok'}
"#;

/// `--retention-days`. KEYS: a room's log. ARGV: the age limit (ms). Deletes the entries older
/// than the limit, which are a prefix of the stream (a room's times never go back in seq
/// order), reading at most 100 pages of 100. Answers 1 if it stopped with old entries maybe
/// left (call again), else 0.
pub const TRIM_AGE: &str = r#"
local now = redis.call('TIME')
local cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[1])
for _ = 1, 100 do
  local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 100)
  if #entries == 0 then return 0 end
  local keep = nil
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    local t = nil
    for i = 1, #fields, 2 do
      if fields[i] == 't' then t = tonumber(fields[i + 1]) end
    end
    if t and t >= cutoff then
      keep = entry[1]
      break
    end
  end
  if keep then
    redis.call('XTRIM', KEYS[1], 'MINID', keep)
    return 0
  end
  local last = entries[#entries][1]
  local seq = tonumber(string.match(last, '^(%d+)'))
  redis.call('XTRIM', KEYS[1], 'MINID', (seq + 1) .. '-0')
  if #entries < 100 then return 0 end
end
return 1
"#;

/// READ: a read position only moves forward. KEYS: room reads. ARGV: user, seq.
pub const READ: &str = r#"
local stored = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > stored then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return {'ok'}
"#;

/// A user's first session on this node. KEYS: the user's presence set (nodes with a session of
/// theirs), this node's user set. ARGV: user, node, presence channel. Announces `on <node>` when the
/// user was on no node.
pub const ONLINE: &str = r#"
local before = redis.call('SCARD', KEYS[1])
redis.call('SADD', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
if before == 0 then redis.call('PUBLISH', ARGV[3], 'on ' .. ARGV[2]) end
return {'ok'}
"#;

/// This node's last session of a user ended (after the presence grace). KEYS: presence set,
/// this node's user set, the user's hash. ARGV: user, node, presence channel, last_seen (ms).
/// Announces `off <ms>` when no node has a session of theirs.
pub const OFFLINE: &str = r#"
redis.call('SREM', KEYS[1], ARGV[2])
redis.call('SREM', KEYS[2], ARGV[1])
if redis.call('SCARD', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[3], 'last_seen_ms', ARGV[4])
  redis.call('PUBLISH', ARGV[3], 'off ' .. ARGV[4])
end
return {'ok'}
"#;

/// A node's heartbeat, then the reaping of dead nodes. KEYS: the node lease set. ARGV: node,
/// lease (ms), grace (ms). A node whose lease ran out more than the grace ago is claimed by
/// whoever gets here first (ZREM succeeds once): each of its users it was the last node of
/// goes offline (`off <ms>`, with the lease's end as last_seen). Answers how many were reaped.
pub const LEASE: &str = r#"
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[2]), ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms - tonumber(ARGV[3]), 'WITHSCORES')
local reaped = 0
for i = 1, #dead, 2 do
  local node, ended = dead[i], dead[i + 1]
  if redis.call('ZREM', KEYS[1], node) == 1 then
    local users_key = 'n:' .. node .. ':users'
    for _, user in ipairs(redis.call('SMEMBERS', users_key)) do
      local set = 'p:{' .. user .. '}'
      redis.call('SREM', set, node)
      if redis.call('SCARD', set) == 0 then
        redis.call('HSET', 'u:{' .. user .. '}', 'last_seen_ms', ended)
        redis.call('PUBLISH', 'p:' .. user, 'off ' .. ended)
      end
    end
    redis.call('DEL', users_key)
    reaped = reaped + 1
  end
end
return reaped
"#;
