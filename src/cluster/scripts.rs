//! The Lua scripts a node runs in Redis. Each is one atomic step: Redis runs a script to the
//! end before anything else, so a script's checks and writes cannot interleave with another
//! node's. Sent with EVAL (Redis caches the compiled script by its hash), so a Redis restart,
//! which empties the script cache, needs no reload step.
//!
//! Every script answers with a table whose first element says what happened, never with an
//! error reply, so one pipeline's answers map one to one onto its requests.
//!
//! Every script's keys share one hash slot, so a Redis Cluster can run it (docs/cluster.md):
//!
//! | script | keys | slot |
//! |---|---|---|
//! | [`SEND`] | room hash, log, members, client id (`r:{room}:cid:...` on a cluster) | `{room}` |
//! | [`ROOM`], [`ACCESS`], [`INVITE`], [`UNINVITE`], [`READ`], [`TRIM_AGE`] | the room's | `{room}` |
//! | [`JOIN`], [`LEAVE`] | members, room hash / reads (the user's room set is a second command) | `{room}` |
//! | [`DEVICE_KEY`] | the user's key hash | `{user}` |
//! | [`ONLINE`], [`OFFLINE`] | `p:{user}`, `u:{user}` (the node's user set is a second command) | `{user}` |
//! | [`LEASE`], [`RELEASE`] | `nodes` | `nodes` |
//! | [`PUBLISH`] | the room's or user's hash, only to route it there | its own |

/// SEND / DM. KEYS: room hash, room log (stream), room members, and with a client id its key
/// (`u:{user}:cid:<cid>` on one Redis, `r:{room}:cid:<user>:<cid>` on a Redis Cluster, where it
/// must share the room's slot; see `log`). Without one there is no fourth key: even an empty
/// name is a key, in slot 0.
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
if KEYS[4] then
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
if KEYS[4] then
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

/// JOIN. KEYS: room members, room hash. ARGV: user, room channel, node, room, the user's
/// sessions channel. A new member is announced on the room's channel with the room's seq at
/// the join (`J <user> <node> <seq>`), and on the user's sessions channel (`J <room> <node>
/// <seq>`, for nodes with sessions of the user that do not follow the room; see
/// `cluster::control`; a PUBLISH names no key, so this stays in the room's slot). The user's
/// room set (`u:{user}:rooms`, another slot) is added to by a command queued just before this
/// script (`writer`), so the set holds every room the user is a member of.
pub const JOIN: &str = r#"
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  local seq = redis.call('HGET', KEYS[2], 'seq') or '0'
  redis.call('PUBLISH', ARGV[2], 'J ' .. ARGV[1] .. ' ' .. ARGV[3] .. ' ' .. seq)
  redis.call('PUBLISH', ARGV[5], 'J ' .. ARGV[4] .. ' ' .. ARGV[3] .. ' ' .. seq)
end
return {'ok'}
"#;

/// LEAVE (and KICK). KEYS: room members, room reads. ARGV: user, room channel, node. A member
/// who goes is announced (`L <user> <node>`). The room leaves the user's room set by a command
/// queued just after this script (`writer`).
pub const LEAVE: &str = r#"
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('PUBLISH', ARGV[2], 'L ' .. ARGV[1] .. ' ' .. ARGV[3])
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
/// theirs). ARGV: node, presence channel. Announces `on <node>` when the user was on no node.
/// The node's user set (`n:<node>:users`, another slot) is added to by a command queued just
/// before (`presence`), so a reaper of this node finds every user it may have to announce.
pub const ONLINE: &str = r#"
local before = redis.call('SCARD', KEYS[1])
redis.call('SADD', KEYS[1], ARGV[1])
if before == 0 then redis.call('PUBLISH', ARGV[2], 'on ' .. ARGV[1]) end
return {'ok'}
"#;

/// A node no longer has a session of the user: its last one ended (after the presence grace),
/// or the node died and this is its reaper. KEYS: presence set, the user's hash. ARGV: node,
/// presence channel, last_seen (ms). Announces `off <ms>` when no node has a session of
/// theirs. Idempotent: a second call for the same node finds it gone and announces nothing.
pub const OFFLINE: &str = r#"
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[2], 'last_seen_ms', ARGV[3])
  redis.call('PUBLISH', ARGV[2], 'off ' .. ARGV[3])
end
return {'ok'}
"#;

/// A node's heartbeat, and the claim of dead nodes. KEYS: the node lease set. ARGV: node, lease
/// (ms), grace (ms). A node whose lease ran out more than the grace ago is claimed by whoever
/// gets here first: its score becomes a lease of the claimer's (now + lease), so no other node
/// claims it meanwhile, and if the claimer dies before it is done the claim runs out and
/// another node claims it again. Answers `{node, lease end, claim}` for each claimed node; the
/// claimer then takes each of its users offline ([`OFFLINE`], on the user's slot) and ends
/// the claim ([`RELEASE`]).
pub const LEASE: &str = r#"
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local claim = ms + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], claim, ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms - tonumber(ARGV[3]), 'WITHSCORES')
local claimed = {}
for i = 1, #dead, 2 do
  redis.call('ZADD', KEYS[1], claim, dead[i])
  table.insert(claimed, dead[i])
  table.insert(claimed, dead[i + 1])
  table.insert(claimed, tostring(claim))
end
return claimed
"#;

/// A reaped node's claim ends. KEYS: the node lease set. ARGV: node, the claim's score. Only
/// the claim is removed: a node of that name that came back meanwhile renewed its own lease.
pub const RELEASE: &str = r#"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
return {'ok'}
"#;

/// An announcement: a PUBLISH routed, on a Redis Cluster, to the master of KEYS[1] (the room's
/// or the user's hash, which it does not touch), so it follows that room's or user's scripts
/// in order. A bare PUBLISH would go to a node chosen by the channel's name. ARGV: channel,
/// payload.
pub const PUBLISH: &str = r#"
redis.call('PUBLISH', ARGV[1], ARGV[2])
return {'ok'}
"#;
