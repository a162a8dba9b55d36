// chatd's web client: one WebSocket speaking the line protocol of protocol.md, and the DOM.
// Everything a person typed or a server sent is put on the page with textContent, never as
// HTML. No framework, no build step: this file is served as it is.
'use strict';

// ---------------------------------------------------------------- state

const $ = (id) => document.getElementById(id);

/** Connection and login. */
const session = {
  name: '',
  password: '',
  device: deviceId(),
  ws: null,
  loggedIn: false,
  stopped: true,
  attempts: 0,
  reconnectTimer: null,
  limits: { burst: 20, perSecond: 5, typingTtl: 6000 },
};

/** Rooms by name (direct rooms too), and the one on screen. */
const rooms = new Map();
let active = null;
/** Sends not yet acknowledged, by client id: retried with the same cid after a reconnect. */
const unacked = new Map();
/** Commands in flight on this connection, by label. */
const inflight = new Map();
/** ROOM lines of the ROOMS reply being read. */
let listing = null;
let labels = 0;
let cids = 0;

function deviceId() {
  // One device per tab: a reload keeps it (sessionStorage), another tab gets its own.
  let id = sessionStorage.getItem('chatd-device');
  if (!id) {
    id = 'web-' + Math.random().toString(36).slice(2, 10);
    sessionStorage.setItem('chatd-device', id);
  }
  return id;
}

function newRoom(name) {
  return {
    name,
    dm: name.startsWith('dm:'),
    epoch: null,
    latest: 0,
    // The last seq shown, contiguously from where this page started: null until known.
    cursor: null,
    read: 0,
    memberCount: 0,
    syncing: false,
    // Lines held while a SYNC runs or after a hole: seq -> message or gap.
    pending: new Map(),
    shown: [],
    ids: new Set(),
    historyDone: false,
    members: new Map(),
    typing: new Map(),
    receipts: new Map(),
    private: false,
    notices: [],
  };
}

function room(name) {
  let r = rooms.get(name);
  if (!r) {
    r = newRoom(name);
    rooms.set(name, r);
  }
  return r;
}

function dmPartner(name) {
  const [, a, b] = name.split(':');
  return a === session.name ? b : a;
}

function dmRoomName(user) {
  return 'dm:' + [session.name, user].sort().join(':');
}

// ---------------------------------------------------------------- the wire

/** Commands wait here for a token of the client's own rate limit (protocol.md, "Writing a
 * client"): the server's burst and rate, learnt from INFO. */
const queue = [];
let tokens = 20;
let refilled = performance.now();
let pumpTimer = null;

function enqueue(line) {
  queue.push(line);
  pump();
}

function pump() {
  const now = performance.now();
  tokens = Math.min(session.limits.burst, tokens + ((now - refilled) / 1000) * session.limits.perSecond);
  refilled = now;
  const ws = session.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  const batch = [];
  while (queue.length && tokens >= 1) {
    batch.push(queue.shift());
    tokens -= 1;
  }
  // Several lines go in one message, separated by \n (protocol.md, "WebSocket").
  if (batch.length) ws.send(batch.join('\n'));
  if (queue.length && !pumpTimer) {
    const wait = ((1 - tokens) / session.limits.perSecond) * 1000;
    pumpTimer = setTimeout(() => {
      pumpTimer = null;
      pump();
    }, Math.max(10, wait));
  }
}

/** Sends a command with a label of its own; `meta` says what its reply is for. */
function command(line, meta = {}) {
  const label = 'c' + ++labels;
  inflight.set(label, { line, ...meta });
  const tags = meta.cid ? `@${label};cid=${meta.cid}` : `@${label}`;
  enqueue(`${tags} ${line}`);
  return label;
}

function connect() {
  clearTimeout(session.reconnectTimer);
  session.stopped = false;
  setConnection('connecting');
  const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  const ws = new WebSocket(scheme + location.host + '/ws', 'chatd');
  session.ws = ws;
  ws.onmessage = (event) => {
    if (session.ws !== ws) return;
    for (const line of String(event.data).split('\n')) {
      if (line) handle(line);
    }
  };
  ws.onclose = () => {
    if (session.ws !== ws) return;
    session.ws = null;
    disconnected();
  };
}

function disconnected(pause) {
  session.loggedIn = false;
  inflight.clear();
  queue.length = 0;
  for (const r of rooms.values()) r.typing.clear();
  if (session.stopped) return;
  setConnection('offline');
  const delay = pause ?? Math.min(10000, 300 * 2 ** session.attempts) + Math.random() * 300;
  session.attempts += 1;
  session.reconnectTimer = setTimeout(connect, delay);
  render();
}

function stop(message) {
  session.stopped = true;
  clearTimeout(session.reconnectTimer);
  if (session.ws) session.ws.close();
  session.ws = null;
  setConnection('offline');
  showLogin(message);
}

// ---------------------------------------------------------------- reading lines

/** Splits a server line: its label, its fields, and the text after ` :`. */
function parse(line) {
  let label = null;
  let rest = line;
  if (rest.startsWith('@')) {
    const space = rest.indexOf(' ');
    label = rest.slice(1, space);
    rest = rest.slice(space + 1);
  }
  return { label, rest };
}

/** Splits off `count` space-separated fields; the last element is the rest of the line. */
function fields(text, count) {
  const out = [];
  let rest = text;
  for (let i = 0; i < count; i++) {
    rest = rest.replace(/^ +/, '');
    const space = rest.indexOf(' ');
    if (space < 0) {
      out.push(rest);
      rest = '';
    } else {
      out.push(rest.slice(0, space));
      rest = rest.slice(space + 1);
    }
  }
  out.push(rest.replace(/^ +/, ''));
  return out;
}

function trailing(text) {
  const at = text.indexOf(' :');
  return at < 0 ? '' : text.slice(at + 2);
}

function keyValues(words) {
  const out = {};
  for (const word of words) {
    const eq = word.indexOf('=');
    if (eq > 0) out[word.slice(0, eq)] = word.slice(eq + 1);
  }
  return out;
}

function handle(line) {
  const { label, rest } = parse(line);
  const meta = label ? inflight.get(label) : undefined;
  const words = rest.split(' ');
  const verb = words[0];
  switch (verb) {
    case 'HELLO':
      command('INFO');
      command(loginLine(), { kind: 'login' });
      return;
    case 'MSG': {
      const [, roomName, seq, id, sentAt, sender, body] = fields(rest, 6);
      const m = { room: roomName, seq: Number(seq), id, sentAt, sender, body };
      if (meta && meta.kind === 'history') meta.messages.push(m);
      else received(m);
      return;
    }
    case 'OK':
      return ok(words, rest, label, meta);
    case 'ERR':
      return error(words[1], trailing(rest), label, meta);
    case 'ROOM': {
      const values = keyValues(words.slice(2));
      if (listing) listing.push({ name: words[1], ...values });
      return;
    }
    case 'WHO': {
      const r = rooms.get(words[1]);
      if (!r) return;
      if (meta && !meta.started) {
        meta.started = true;
        r.members.clear();
      }
      const values = keyValues(words.slice(4));
      r.members.set(words[2], { online: words[3] === 'online', lastSeen: values.last_seen });
      render();
      return;
    }
    case 'GAP': {
      const r = rooms.get(words[1]);
      if (!r) return;
      const gap = { gap: true, seq: Number(words[2]), to: Number(words[3]) };
      r.pending.set(gap.seq, gap);
      if (!r.syncing) drain(r);
      return;
    }
    case 'EPOCH': {
      // The room's history was reset: the old cursor does not apply, and the replay that
      // follows is the room's whole history.
      const r = rooms.get(words[1]);
      if (!r) return;
      r.epoch = words[2];
      r.cursor = 0;
      r.shown = [];
      r.ids.clear();
      r.pending.clear();
      r.notices.push('The history of this room was reset.');
      render();
      return;
    }
    case 'JOINED': {
      const r = rooms.get(words[1]);
      if (words[2] === session.name) {
        // Joined on another device: learn the room's details from ROOMS.
        if (!r && !listing) {
          listing = [];
          command('ROOMS', { kind: 'rooms' });
        }
        return;
      }
      if (r) {
        r.members.set(words[2], { online: true });
        r.memberCount = r.members.size;
      }
      render();
      return;
    }
    case 'LEFT': {
      const r = rooms.get(words[1]);
      if (!r) return;
      if (words[2] === session.name) return forget(r, 'You left this room on another device.');
      r.members.delete(words[2]);
      r.receipts.delete(words[2]);
      render();
      return;
    }
    case 'PRESENCE': {
      const values = keyValues(words.slice(3));
      for (const r of rooms.values()) {
        const member = r.members.get(words[1]);
        if (member) {
          member.online = words[2] === 'online';
          if (values.last_seen) member.lastSeen = values.last_seen;
        }
      }
      render();
      return;
    }
    case 'INVITED':
      invites.set(words[1], words[2]);
      render();
      return;
    case 'KICKED': {
      const r = rooms.get(words[1]);
      if (r) forget(r, `${words[2]} removed you from ${words[1]}.`);
      toast(`${words[2]} removed you from ${words[1]}.`);
      return;
    }
    case 'TYPING': {
      const r = rooms.get(words[1]);
      if (!r) return;
      if (words[3] === 'stop') r.typing.delete(words[2]);
      else r.typing.set(words[2], Date.now() + session.limits.typingTtl + 2000);
      renderTyping();
      return;
    }
    case 'READ': {
      const r = rooms.get(words[1]);
      if (!r) return;
      const seq = Number(words[3]);
      if (words[2] === session.name) r.read = Math.max(r.read, seq);
      else r.receipts.set(words[2], seq);
      render();
      return;
    }
    case 'BYE':
      return bye(words[1], trailing(rest));
    default:
      return;
  }
}

function loginLine() {
  let line = `LOGIN ${session.name} device=${session.device}`;
  if (session.password) line += ` password=${session.password}`;
  return line;
}

function ok(words, rest, label, meta) {
  if (label) inflight.delete(label);
  const what = words[1];
  switch (what) {
    case 'INFO': {
      const v = keyValues(words.slice(2));
      if (v['rate-limit'] === 'on') {
        session.limits.burst = Number(v['rate-burst']) || 20;
        session.limits.perSecond = Number(v['rate-per-second']) || 5;
      } else if (v['rate-limit'] === 'off') {
        session.limits.burst = 1000;
        session.limits.perSecond = 1000;
      }
      session.limits.typingTtl = Number(v['typing-ttl-ms']) || 6000;
      return;
    }
    case 'LOGIN':
      session.loggedIn = true;
      session.attempts = 0;
      session.name = words[2];
      setConnection('online');
      showApp();
      // From OK LOGIN until each room's SYNC is done, its live lines are held.
      for (const r of rooms.values()) r.syncing = true;
      listing = [];
      command('ROOMS', { kind: 'rooms' });
      return;
    case 'ROOMS':
      return roomsListed();
    case 'JOIN': {
      const v = keyValues(words.slice(3));
      const r = room(words[2]);
      if (r.epoch && r.epoch !== v.epoch) resetRoom(r);
      r.epoch = v.epoch;
      r.latest = Math.max(r.latest, Number(v.seq));
      r.memberCount = Number(v.members);
      if (r.cursor === null) {
        r.cursor = Number(v.seq);
        r.read = Number(v.seq);
        older(r);
      }
      r.syncing = false;
      drain(r);
      select(r.name);
      command(`WHO ${r.name}`, { kind: 'who' });
      return;
    }
    case 'LEAVE': {
      const r = rooms.get(words[2]);
      if (r) forget(r);
      return;
    }
    case 'SYNC': {
      const r = rooms.get(words[2]);
      if (!r) return;
      const v = keyValues(words.slice(3));
      r.latest = Math.max(r.latest, Number(v.seq));
      r.epoch = v.epoch;
      drain(r);
      if (words.includes('more')) return sync(r);
      r.syncing = false;
      // A hole even the replay could not fill (never expected): show what is held, in order.
      for (const seq of [...r.pending.keys()].sort((a, b) => a - b)) {
        const entry = r.pending.get(seq);
        r.pending.delete(seq);
        if (seq > r.cursor) show(r, entry);
      }
      render();
      markRead();
      return;
    }
    case 'HISTORY': {
      const r = rooms.get(words[2]);
      if (!r || !meta) return;
      const older = meta.messages.filter((m) => !r.ids.has(m.id));
      for (const m of older) r.ids.add(m.id);
      r.shown = older.concat(r.shown);
      if (meta.messages.length === 0 || meta.messages[0].seq <= 1) r.historyDone = true;
      render({ keepScroll: true });
      return;
    }
    case 'SEND':
    case 'DM':
      if (meta && meta.cid) unacked.delete(meta.cid);
      render();
      return;
    case 'PRIVATE': {
      const r = rooms.get(words[2]);
      if (r) r.private = words[3] === 'on';
      toast(r && r.private ? `${words[2]} is invite-only now.` : `${words[2]} is public now.`);
      render();
      return;
    }
    case 'INVITE':
      toast(`Invited ${words[3]} to ${words[2]}.`);
      return;
    case 'REGISTER':
      if (meta && meta.password) session.password = meta.password;
      toast('Your name now has a password.');
      render();
      return;
    case 'READ': {
      const r = rooms.get(words[2]);
      if (r) r.read = Math.max(r.read, Number(words[3]));
      render();
      return;
    }
    default:
      return;
  }
}

function error(code, text, label, meta) {
  if (label) inflight.delete(label);
  if (code === 'rate-limited' && meta) {
    // Resend the very same command when told: on time, it is never refused again.
    const wait = Number((text.match(/retry in (\d+)ms/) || [])[1] || 1000);
    setTimeout(() => {
      if (session.loggedIn || meta.kind === 'login') command(meta.line, meta);
    }, wait);
    return;
  }
  if (meta && meta.kind === 'login') {
    return stop(code === 'bad-password' ? 'Wrong password for this name.' : text || code);
  }
  if (meta && meta.cid) {
    unacked.delete(meta.cid);
    toast(`Not sent: ${text || code}`);
    render();
    return;
  }
  if (meta && meta.kind === 'sync' && (code === 'no-such-room' || code === 'not-member')) {
    const r = rooms.get(meta.room);
    if (r) forget(r, `You are no longer in ${r.name}.`);
    return;
  }
  if (code === 'no-such-room' && meta && meta.kind === 'join') {
    toast(`${meta.room} is invite-only; ask its owner for an invitation.`);
    const r = rooms.get(meta.room);
    if (r && !r.shown.length) forget(r);
    return;
  }
  toast(text || code);
}

function bye(reason, text) {
  // protocol.md, "Connection endings": whether and when to come back.
  const ws = session.ws;
  session.ws = null;
  if (ws) ws.close();
  if (reason === 'replaced' || reason === 'registered' || reason === 'password-changed') {
    return stop(text);
  }
  if (reason === 'quit') return;
  // slow-consumer: our own cursors are behind what the server wrote, so resuming from them
  // (SYNC each room) loses nothing; flooding: pause first.
  disconnected(reason === 'flooding' ? 5000 : reason === 'slow-consumer' ? 100 : undefined);
}

// ---------------------------------------------------------------- resume, order, dedupe

function roomsListed() {
  const listed = listing || [];
  listing = null;
  const names = new Set(listed.map((entry) => entry.name));
  for (const entry of listed) {
    const r = room(entry.name);
    if (r.epoch && r.epoch !== entry.epoch) resetRoom(r);
    r.epoch = entry.epoch;
    r.latest = Math.max(r.latest, Number(entry.seq));
    r.read = Number(entry.read);
    r.memberCount = Number(entry.members);
    // A room new to this page: show its last 50 messages (older ones on request).
    if (r.cursor === null) {
      r.cursor = Math.max(0, Number(entry.seq) - 50);
      r.historyDone = r.cursor === 0;
    }
    sync(r);
    // Events are live only: what changed while away is read again (WHO now for the room on
    // screen, for the others when they are opened).
    r.members.clear();
    if (r.name === active) command(`WHO ${r.name}`, { kind: 'who' });
  }
  for (const r of [...rooms.values()]) {
    if (!names.has(r.name) && !r.draft) forget(r, `You are no longer in ${r.name}.`);
  }
  // Sends the last connection did not see acknowledged, with their own cids.
  for (const entry of unacked.values()) transmit(entry);
  if (!active || !rooms.has(active)) select(firstRoom());
  render();
}

function sync(r) {
  r.syncing = true;
  const epoch = r.epoch ? ` epoch=${r.epoch}` : '';
  command(`SYNC ${r.name} ${r.cursor}${epoch}`, { kind: 'sync', room: r.name });
}

function resetRoom(r) {
  r.cursor = null;
  r.shown = [];
  r.ids.clear();
  r.pending.clear();
  r.historyDone = false;
  r.notices.push('The history of this room was reset.');
}

/** A message arrived (live, or a SYNC replay): shown once, in seq order. */
function received(m) {
  let r = rooms.get(m.room);
  if (!r) {
    // A room this page did not know (a first DM, a JOIN on another device): start at this
    // message and ask for the room's details.
    r = room(m.room);
    r.cursor = m.seq - 1;
    if (!listing) {
      listing = [];
      command('ROOMS', { kind: 'rooms' });
    }
  }
  if (r.draft) {
    r.draft = false;
    if (r.cursor === null) r.cursor = 0;
  }
  if (r.ids.has(m.id)) return;
  if (r.cursor === null || r.syncing || m.seq !== r.cursor + 1) {
    if (r.cursor !== null && m.seq <= r.cursor) return;
    r.pending.set(m.seq, m);
    // A hole in the live stream: fill it from the room's history.
    if (r.cursor !== null && !r.syncing) sync(r);
    return;
  }
  show(r, m);
  drain(r);
  render();
  markRead();
}

function show(r, entry) {
  if (entry.gap) {
    r.notices.push(`Messages ${entry.seq}–${entry.to} are no longer available.`);
    r.cursor = Math.max(r.cursor, entry.to);
    return;
  }
  if (r.ids.has(entry.id)) return;
  r.ids.add(entry.id);
  r.shown.push(entry);
  r.cursor = entry.seq;
  r.latest = Math.max(r.latest, entry.seq);
  if (entry.sender === session.name) r.read = Math.max(r.read, entry.seq);
}

/** Shows the held lines that now follow the cursor. */
function drain(r) {
  if (r.cursor === null) return;
  for (const seq of [...r.pending.keys()]) {
    if (seq <= r.cursor && !r.pending.get(seq).gap) r.pending.delete(seq);
  }
  while (r.pending.has(r.cursor + 1)) {
    const entry = r.pending.get(r.cursor + 1);
    r.pending.delete(r.cursor + 1);
    show(r, entry);
  }
  render();
}

function forget(r, notice) {
  rooms.delete(r.name);
  if (active === r.name) {
    active = null;
    select(firstRoom());
  }
  if (notice) toast(notice);
  render();
}

function firstRoom() {
  const names = [...rooms.keys()].sort();
  return names.find((name) => !name.startsWith('dm:')) || names[0] || null;
}

function older(r) {
  const before = r.shown.length ? r.shown[0].seq : r.cursor + 1;
  if (before <= 1) {
    r.historyDone = true;
    return;
  }
  command(`HISTORY ${r.name} 50 before=${before}`, { kind: 'history', room: r.name, messages: [] });
}

// ---------------------------------------------------------------- actions

function newCid() {
  cids += 1;
  return `${session.device}-${Date.now().toString(36)}-${cids}`;
}

function sendMessage(body) {
  const r = rooms.get(active);
  if (!r || !body.trim()) return;
  const entry = { cid: newCid(), room: r.name, body, dm: r.dm ? dmPartner(r.name) : null };
  unacked.set(entry.cid, entry);
  typingSent = 0;
  if (session.loggedIn) transmit(entry);
  render();
}

function transmit(entry) {
  const line = entry.dm ? `DM ${entry.dm} ${entry.body}` : `SEND ${entry.room} ${entry.body}`;
  command(line, { kind: 'send', cid: entry.cid });
}

function join(name) {
  name = name.trim().toLowerCase();
  if (!name) return;
  if (rooms.has(name) && !rooms.get(name).draft) return select(name);
  command(`JOIN ${name}`, { kind: 'join', room: name });
}

function openDm(user) {
  user = user.trim().toLowerCase();
  if (!user || user === session.name) return;
  const name = dmRoomName(user);
  if (!rooms.has(name)) {
    const r = room(name);
    r.draft = true;
    r.cursor = 0;
    r.historyDone = true;
  }
  select(name);
}

let typingSent = 0;
function typing(text) {
  const r = rooms.get(active);
  if (!r || r.draft || !session.loggedIn) return;
  const now = Date.now();
  if (text && now - typingSent > 3000) {
    typingSent = now;
    command(`TYPING ${r.name}`);
  } else if (!text && typingSent) {
    typingSent = 0;
    command(`TYPING ${r.name} stop`);
  }
}

let readTimer = null;
function markRead() {
  clearTimeout(readTimer);
  readTimer = setTimeout(() => {
    const r = rooms.get(active);
    if (!r || !session.loggedIn || document.visibilityState !== 'visible' || r.syncing) return;
    if (r.cursor !== null && r.cursor > r.read) {
      r.read = r.cursor;
      command(`READ ${r.name} ${r.cursor}`);
      render();
    }
  }, 250);
}

function select(name) {
  active = name;
  const r = name && rooms.get(name);
  if (r && !r.members.size && session.loggedIn && !r.draft) command(`WHO ${r.name}`, { kind: 'who' });
  $('app').classList.remove('show-sidebar');
  render({ toBottom: true });
  markRead();
  if (window.matchMedia('(min-width: 901px)').matches) $('composer-input').focus();
}

// ---------------------------------------------------------------- drawing

const invites = new Map();
let drawPending = null;

function setConnection(state) {
  document.body.dataset.connection = state;
  const status = $('status');
  status.hidden = state === 'online';
  status.textContent = state === 'connecting' ? 'Connecting…' : 'Offline: reconnecting…';
  // Not logged in yet: say so on the login form, which stays until the server answers.
  if (!$('login').hidden && !session.stopped && state === 'offline') {
    $('login-error').textContent = 'Cannot reach the server; trying again…';
  }
}

function showLogin(message) {
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('login-button').disabled = false;
}

function showApp() {
  $('login').hidden = true;
  $('app').hidden = false;
  $('me-name').textContent = session.name;
}

function render(options = {}) {
  if (drawPending) {
    drawPending.toBottom ||= options.toBottom;
    drawPending.keepScroll ||= options.keepScroll;
    return;
  }
  drawPending = { ...options };
  requestAnimationFrame(() => {
    const o = drawPending;
    drawPending = null;
    draw(o);
  });
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function localTime(iso) {
  const date = new Date(iso);
  if (isNaN(date)) return '';
  const today = new Date().toDateString() === date.toDateString();
  return today
    ? date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : date.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

function unread(r) {
  return Math.max(0, r.latest - r.read);
}

function title(r) {
  return r.dm ? '@ ' + dmPartner(r.name) : '# ' + r.name;
}

function draw(options) {
  $('me-name').textContent = session.name;
  $('register-button').hidden = !!session.password;
  // Room lists.
  for (const [listId, dm] of [['room-list', false], ['dm-list', true]]) {
    const list = $(listId);
    list.replaceChildren();
    for (const r of [...rooms.values()].filter((x) => x.dm === dm).sort((a, b) => a.name.localeCompare(b.name))) {
      const item = el('li');
      item.tabIndex = 0;
      item.dataset.room = r.name;
      if (r.name === active) item.classList.add('active');
      const count = r.name === active ? 0 : unread(r);
      item.append(el('span', 'name' + (count ? ' unread' : ''), title(r)));
      if (count) item.append(el('span', 'badge', String(count)));
      item.onclick = () => select(r.name);
      item.onkeydown = (e) => e.key === 'Enter' && select(r.name);
      list.append(item);
    }
  }
  const invitesList = $('invites');
  invitesList.replaceChildren();
  for (const [roomName, owner] of invites) {
    const item = el('li', null, `${owner} invited you to ${roomName} `);
    const button = el('button', null, 'Join');
    button.onclick = () => {
      invites.delete(roomName);
      join(roomName);
    };
    item.append(button);
    invitesList.append(item);
  }
  const r = active ? rooms.get(active) : null;
  $('room-title').textContent = r ? title(r) : 'No room';
  $('room-info').textContent = r && !r.dm ? `${r.memberCount || r.members.size} members` : '';
  $('private-button').hidden = !r || r.dm;
  $('private-button').textContent = r && r.private ? 'Make public' : 'Make invite-only';
  $('leave-button').hidden = !r || r.dm;
  $('invite-form').hidden = !r || r.dm;
  $('composer-input').disabled = !r;
  $('send-button').disabled = !r;
  $('empty').hidden = !!(r && (r.shown.length || pendingFor(r).length));
  $('older-button').hidden = !r || r.historyDone || r.draft;
  drawMessages(r, options);
  drawMembers(r);
  renderTyping();
  document.title = totalUnread() ? `(${totalUnread()}) chatd` : 'chatd';
}

function totalUnread() {
  let n = 0;
  for (const r of rooms.values()) if (r.name !== active) n += unread(r);
  return n;
}

function pendingFor(r) {
  return [...unacked.values()].filter((entry) => entry.room === r.name);
}

function drawMessages(r, options) {
  const box = $('messages');
  const list = $('message-list');
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const fromBottom = box.scrollHeight - box.scrollTop;
  list.replaceChildren();
  if (!r) return;
  // Who has read up to each message: under the latest message at or below their position.
  const seenBy = new Map();
  for (const [user, seq] of r.receipts) {
    let at = null;
    for (const m of r.shown) if (m.seq <= seq) at = m.seq;
    if (at !== null) seenBy.set(at, [...(seenBy.get(at) || []), user]);
  }
  for (const notice of r.notices) list.append(el('li', 'notice', notice));
  for (const m of r.shown) {
    const item = el('li', 'msg' + (m.sender === session.name ? ' mine' : ''));
    item.dataset.seq = m.seq;
    item.dataset.id = m.id;
    item.dataset.room = r.name;
    const meta = el('div', 'meta');
    meta.append(el('span', 'sender', m.sender));
    const time = el('time', null, localTime(m.sentAt));
    time.dateTime = m.sentAt;
    time.title = new Date(m.sentAt).toLocaleString();
    meta.append(time);
    item.append(meta, el('div', 'body', m.body));
    const seen = seenBy.get(m.seq);
    if (seen) item.append(el('div', 'seen', 'Seen by ' + seen.sort().join(', ')));
    list.append(item);
  }
  for (const entry of pendingFor(r)) {
    const item = el('li', 'msg mine pending');
    item.dataset.cid = entry.cid;
    const meta = el('div', 'meta');
    meta.append(el('span', 'sender', session.name), el('time', null, 'sending…'));
    item.append(meta, el('div', 'body', entry.body));
    list.append(item);
  }
  if (options.keepScroll) box.scrollTop = box.scrollHeight - fromBottom;
  else if (options.toBottom || atBottom) box.scrollTop = box.scrollHeight;
}

function drawMembers(r) {
  const list = $('member-list');
  list.replaceChildren();
  if (!r) return;
  const members = [...r.members.entries()].sort((a, b) => a[0].localeCompare(b[0]));
  for (const [name, member] of members) {
    const item = el('li');
    item.append(el('span', 'dot' + (member.online ? ' online' : '')));
    const who = el('span', null, name + (name === session.name ? ' (you)' : ''));
    item.append(who);
    if (!member.online && member.lastSeen) {
      item.append(el('span', 'last-seen', 'seen ' + localTime(member.lastSeen)));
    }
    if (name !== session.name && !r.dm) {
      item.title = 'Click to send a direct message';
      item.style.cursor = 'pointer';
      item.onclick = () => openDm(name);
    }
    list.append(item);
  }
}

function renderTyping() {
  const r = active ? rooms.get(active) : null;
  const now = Date.now();
  const names = [];
  if (r) {
    for (const [user, until] of r.typing) {
      if (until < now) r.typing.delete(user);
      else names.push(user);
    }
  }
  $('typing').textContent = names.length === 0 ? ''
    : names.length === 1 ? `${names[0]} is typing…`
    : `${names.slice(0, -1).join(', ')} and ${names.at(-1)} are typing…`;
}

let toastTimer = null;
function toast(text) {
  const box = $('toast');
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (box.hidden = true), 4000);
}

// ---------------------------------------------------------------- wiring

function reset() {
  rooms.clear();
  unacked.clear();
  invites.clear();
  active = null;
}

$('login-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const name = $('login-name').value.trim().toLowerCase();
  if (!/^[a-z0-9._-]{1,32}$/.test(name)) {
    $('login-error').textContent = 'A name is 1-32 letters, digits, dots, dashes or underscores.';
    return;
  }
  if (name !== session.name) reset();
  session.name = name;
  session.password = $('login-password').value;
  $('login-password').value = '';
  $('login-button').disabled = true;
  sessionStorage.setItem('chatd-name', name);
  connect();
});

$('login-name').value = sessionStorage.getItem('chatd-name') || '';

$('logout-button').onclick = () => {
  if (session.ws && session.loggedIn) enqueue('QUIT');
  setTimeout(() => stop(''), 100);
  reset();
};

$('register-button').onclick = () => {
  const password = prompt('A password for your name (1-128 characters, no spaces):');
  if (password) command(`REGISTER ${password}`, { kind: 'register', password });
};

$('join-form').addEventListener('submit', (event) => {
  event.preventDefault();
  join($('join-input').value);
  $('join-input').value = '';
});

$('dm-form').addEventListener('submit', (event) => {
  event.preventDefault();
  openDm($('dm-input').value);
  $('dm-input').value = '';
});

$('invite-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const user = $('invite-input').value.trim().toLowerCase();
  if (user && active) command(`INVITE ${active} ${user}`);
  $('invite-input').value = '';
});

$('composer').addEventListener('submit', (event) => {
  event.preventDefault();
  const input = $('composer-input');
  sendMessage(input.value.replace(/[\r\n]+/g, ' '));
  input.value = '';
});

$('composer-input').addEventListener('input', (event) => typing(event.target.value));

$('leave-button').onclick = () => {
  if (active && confirm(`Leave ${active}?`)) command(`LEAVE ${active}`);
};

$('private-button').onclick = () => {
  const r = rooms.get(active);
  if (r) command(`PRIVATE ${r.name} ${r.private ? 'off' : 'on'}`);
};

$('older-button').onclick = () => {
  const r = rooms.get(active);
  if (r) older(r);
};

$('messages').addEventListener('scroll', () => {
  const box = $('messages');
  const r = rooms.get(active);
  if (box.scrollTop === 0 && r && !r.historyDone && session.loggedIn) older(r);
});

$('menu-button').onclick = () => $('app').classList.toggle('show-sidebar');
$('members-button').onclick = () => $('app').classList.toggle('show-members');

document.addEventListener('visibilitychange', markRead);
window.addEventListener('focus', markRead);

// Keyboard: Ctrl+K joins a room, Alt+Up/Down moves between rooms, Escape writes.
document.addEventListener('keydown', (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key === 'k') {
    event.preventDefault();
    $('join-input').focus();
  } else if (event.altKey && (event.key === 'ArrowUp' || event.key === 'ArrowDown')) {
    event.preventDefault();
    const names = [...document.querySelectorAll('.room-list li')].map((li) => li.dataset.room);
    const at = names.indexOf(active);
    const next = names[(at + (event.key === 'ArrowDown' ? 1 : names.length - 1)) % names.length];
    if (next) select(next);
  } else if (event.key === 'Escape') {
    $('composer-input').focus();
  }
});

// Typing indicators expire on their own; a PING keeps idle connections through proxies.
setInterval(renderTyping, 1000);
setInterval(() => session.loggedIn && enqueue('PING keepalive'), 30000);
