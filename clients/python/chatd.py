"""A blocking chatd client, standard library only (Python 3.9+).

It keeps chatd's promises on the client's side, as protocol.md's "Writing a client" asks:
it reconnects with backoff, logs in again, SYNCs every room from the last seq it delivered
(holding live lines until the replay is done, following GAP, EPOCH and ``more``), retries
unacknowledged sends with their cids, and delivers each room's messages exactly once, in
order.

    client = Client.connect("127.0.0.1", 7878, "alice", device="laptop")
    client.join("general")
    client.send("general", "hello")          # stored exactly once, reconnect or not
    for event in client.events():
        if event.kind == "message":
            print(event.message.room, event.message.sender, event.message.body)

The client has no threads: every call reads the connection while it waits, so a client
that is not called is not reading (the server may cut it off as a slow consumer; it then
resumes on the next call without losing or repeating a message).

Same semantics as the Rust crate in ``client/``; see its README for the design.
"""

import random
import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Optional, Tuple

__all__ = ["Client", "Message", "Event", "ResumeState", "ChatdError", "Refused", "Ended", "Timeout"]


class ChatdError(Exception):
    """Base of the client's errors."""


class Timeout(ChatdError):
    """The deadline passed first."""


class Refused(ChatdError):
    """The server answered ERR <code>: nothing was done."""

    def __init__(self, code: str, text: str):
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class Ended(ChatdError):
    """The session ended for good (BYE registered/password-changed/quit, or LOGIN refused)."""

    def __init__(self, reason: str, text: str):
        super().__init__(f"{reason}: {text}")
        self.reason = reason
        self.text = text


@dataclass(frozen=True)
class Message:
    room: str
    seq: int
    id: str
    sent_at: str
    sender: str
    body: str

    @staticmethod
    def parse(rest: str) -> Optional["Message"]:
        """The fields after ``MSG ``."""
        parts = rest.split(" ", 5)
        if len(parts) < 5 or not parts[1].isdigit():
            return None
        body = parts[5] if len(parts) == 6 else ""
        return Message(parts[0], int(parts[1]), parts[2], parts[3], parts[4], body)


@dataclass
class Event:
    """``kind`` is one of: message, joined, left, presence, invited, kicked, typing, read,
    gap, epoch-reset, sent, refused, disconnected, reconnected. Other fields as the kind needs."""

    kind: str
    message: Optional[Message] = None
    room: str = ""
    user: str = ""
    seq: int = 0
    to: int = 0
    epoch: str = ""
    online: bool = False
    typing: bool = False
    reason: str = ""
    code: str = ""
    text: str = ""
    cid: str = ""


@dataclass
class ResumeState:
    """Each room's cursor (epoch, last seq delivered) and the unacknowledged sends
    (cid, "send" or "dm", room or user, body), in a line format a caller can persist."""

    rooms: Dict[str, Tuple[str, int]] = field(default_factory=dict)
    pending: List[Tuple[str, str, str, str]] = field(default_factory=list)

    HEADER = "chatd-resume 1"

    def dumps(self) -> str:
        lines = [self.HEADER]
        for room, (epoch, seq) in sorted(self.rooms.items()):
            lines.append(f"room {room} {epoch or '-'} {seq}")
        for cid, verb, to, body in self.pending:
            lines.append(f"pending {cid} {verb} {to} {body}")
        return "\n".join(lines) + "\n"

    @classmethod
    def loads(cls, text: str) -> "ResumeState":
        lines = text.split("\n")
        if lines[0] != cls.HEADER:
            raise ValueError("not a chatd resume state")
        state = cls()
        for line in lines[1:]:
            if not line:
                continue
            kind, _, rest = line.partition(" ")
            if kind == "room":
                room, epoch, seq = rest.split(" ")
                state.rooms[room] = ("" if epoch == "-" else epoch, int(seq))
            elif kind == "pending":
                parts = rest.split(" ", 3)
                if len(parts) < 3 or parts[1] not in ("send", "dm"):
                    raise ValueError(f"bad line {line!r}")
                state.pending.append((parts[0], parts[1], parts[2], parts[3] if len(parts) == 4 else ""))
            else:
                raise ValueError(f"bad line {line!r}")
        return state


class _Room:
    """One room's ordering: the cursor, and the lines held while a SYNC is under way
    (live lines with higher seqs arrive before the replay of lower ones)."""

    def __init__(self, epoch: str, seq: int):
        self.epoch = epoch
        self.seq = seq  # the highest seq handed on
        self.syncing = False
        self.replayed = seq  # the highest seq this SYNC's replay brought
        self.held: Dict[int, object] = {}  # seq -> Message, or from -> ("gap", to)

    def begin_sync(self) -> int:
        self.syncing = True
        self.replayed = self.seq
        return self.seq

    def on_message(self, msg: Message, replayed: bool, out: list) -> bool:
        """Returns whether a hole in the live stream needs a SYNC."""
        if replayed:
            self.replayed = max(self.replayed, msg.seq)
        if msg.seq <= self.seq:
            return False  # already delivered
        if not self.syncing and msg.seq == self.seq + 1 and not self.held:
            self.seq = msg.seq
            out.append(Event("message", message=msg, room=msg.room, seq=msg.seq))
            return False
        self.held.setdefault(msg.seq, msg)
        return not self.syncing

    def on_gap(self, first: int, last: int) -> None:
        self.replayed = max(self.replayed, last)
        if last > self.seq:
            self.held[first] = ("gap", last)

    def on_epoch(self, room: str, epoch: str, out: list) -> None:
        self.epoch, self.seq, self.replayed = epoch, 0, 0
        out.append(Event("epoch-reset", room=room, epoch=epoch))

    def page_done(self, more: bool, room: str, out: list) -> Optional[int]:
        if more:
            return max(self.replayed, self.seq)
        self.release(room, out)
        return None

    def release(self, room: str, out: list) -> None:
        self.syncing = False
        held, self.held = self.held, {}
        for first in sorted(held):
            item = held[first]
            if isinstance(item, Message):
                if item.seq > self.seq:
                    self.seq = item.seq
                    out.append(Event("message", message=item, room=room, seq=item.seq))
            elif item[1] > self.seq:
                out.append(Event("gap", room=room, seq=max(first, self.seq + 1), to=item[1]))
                self.seq = item[1]


def _field(words: List[str], key: str) -> Optional[str]:
    for word in words:
        if word.startswith(key + "="):
            return word[len(key) + 1:]
    return None


def _split_text(rest: str) -> Tuple[str, str]:
    at = rest.find(" :")
    if at >= 0:
        return rest[:at], rest[at + 2:]
    return rest, ""


class Client:
    """A chatd session that outlives its connections. Use :meth:`connect`."""

    def __init__(self, host: str, port: int, user: str, device: Optional[str] = None,
                 password: Optional[str] = None, connect_timeout: float = 10.0,
                 initial_backoff: float = 0.1, max_backoff: float = 10.0,
                 replaced_pause: Optional[float] = 30.0, flooding_pause: float = 5.0,
                 state: Optional[ResumeState] = None):
        self.host, self.port, self.user = host, port, user
        self.device, self.password = device, password
        self.connect_timeout = connect_timeout
        self.initial_backoff, self.max_backoff = initial_backoff, max_backoff
        # protocol.md: after BYE replaced, reconnecting at once would replace the other
        # connection back; pause 30 s or more (None: end the session).
        self.replaced_pause = replaced_pause
        self.flooding_pause = flooding_pause
        self._backoff = initial_backoff
        self._sock: Optional[socket.socket] = None
        self._unread = b""
        self._logged_in = False
        self._ever_logged_in = False
        self._reconnect_at = 0.0
        self._ended: Optional[ChatdError] = None
        self._rooms: Dict[str, _Room] = {}
        self._delivered: Dict[str, Tuple[str, int]] = {}
        self._pending: List[Tuple[str, str, str, str]] = []
        self._waiting_sends: set = set()
        self._send_outcomes: Dict[str, object] = {}
        self._awaiting: Dict[str, dict] = {}  # label -> {line, purpose, arg, lines}
        self._replies: Dict[str, object] = {}
        self._delayed: List[Tuple[float, str]] = []
        self._events: Deque[Event] = deque()
        self._next_label = 0
        # The client's own token bucket (protocol defaults until INFO says otherwise).
        self._rate: Optional[Tuple[float, float]] = (20.0, 5.0)
        self._tokens, self._refilled = 20.0, time.monotonic()
        if state is not None:
            for room, (epoch, seq) in state.rooms.items():
                self._rooms[room] = _Room(epoch, seq)
                self._delivered[room] = (epoch, seq)
            self._pending = list(state.pending)

    # ---- starting and resuming -------------------------------------------------------

    @classmethod
    def connect(cls, host: str, port: int, user: str, **options) -> "Client":
        """Connects, logs in and resumes (``state=ResumeState`` to continue a saved session)."""
        client = cls(host, port, user, **options)
        client.wait_until_resumed(time.monotonic() + client.connect_timeout)
        return client

    def wait_until_resumed(self, deadline: float) -> None:
        while not self._resumed():
            if time.monotonic() >= deadline:
                raise Timeout("login and resume")
            self.pump(deadline)

    def _resumed(self) -> bool:
        return self._logged_in and not any(
            a["purpose"] in ("login", "rooms", "rejoin", "sync") for a in self._awaiting.values())

    def resume_state(self) -> ResumeState:
        rooms = {}
        for name, room in self._rooms.items():
            epoch, seq = self._delivered.get(name, (room.epoch, room.seq))
            rooms[name] = (epoch or room.epoch, seq)
        return ResumeState(rooms, list(self._pending))

    # ---- events --------------------------------------------------------------------------

    def next_event(self, timeout: float) -> Optional[Event]:
        """The next event within ``timeout`` seconds, or None."""
        deadline = time.monotonic() + timeout
        while True:
            if self._events:
                event = self._events.popleft()
                self._note_delivered(event)
                return event
            if time.monotonic() >= deadline:
                return None
            self.pump(deadline)

    def events(self):
        """Events forever (until the session ends, which raises)."""
        while True:
            event = self.next_event(3600.0)
            if event is not None:
                yield event

    def expect_messages(self, room: str, count: int, timeout: float) -> List[Message]:
        """The next ``count`` messages of ``room`` within ``timeout``; other events dropped."""
        deadline = time.monotonic() + timeout
        got: List[Message] = []
        while len(got) < count:
            event = self.next_event(max(0.0, deadline - time.monotonic()))
            if event is None:
                raise Timeout(f"{count} messages of {room} (got {len(got)})")
            if event.kind == "message" and event.room == room:
                got.append(event.message)
        return got

    def expect_event(self, timeout: float, wanted) -> Event:
        """The first event ``wanted(event)`` accepts within ``timeout``; earlier ones dropped."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(max(0.0, deadline - time.monotonic()))
            if event is None:
                raise Timeout("an expected event")
            if wanted(event):
                return event

    # ---- commands ------------------------------------------------------------------------

    def join(self, room: str) -> dict:
        fields = self.call(f"JOIN {_word(room)}")[0]
        return {"room": fields[0], "seq": int(_field(fields, "seq")), "epoch": _field(fields, "epoch"),
                "members": int(_field(fields, "members"))}

    def leave(self, room: str) -> None:
        self.call(f"LEAVE {_word(room)}")

    def send(self, room: str, body: str) -> dict:
        """Posts with a fresh cid and waits for the OK, across reconnects: stored once."""
        return self._send_and_wait("send", room, body)

    def dm(self, user: str, body: str) -> dict:
        return self._send_and_wait("dm", user, body)

    def send_nowait(self, room: str, body: str, verb: str = "send") -> str:
        """Queues a send; its outcome comes as a ``sent`` or ``refused`` event. Returns the cid."""
        return self._enqueue(verb, room, body)

    def flush(self, timeout: float) -> None:
        """Waits until every queued send is acknowledged or refused."""
        deadline = time.monotonic() + timeout
        while self._pending:
            if time.monotonic() >= deadline:
                raise Timeout(f"the OKs of {len(self._pending)} pending sends")
            self.pump(deadline)

    def history(self, room: str, limit: int = 50, before: Optional[int] = None) -> List[Message]:
        extra = f" before={before}" if before is not None else ""
        _, lines = self.call(f"HISTORY {_word(room)} {limit}{extra}")
        return [m for m in (Message.parse(l[4:]) for l in lines if l.startswith("MSG ")) if m]

    def who(self, room: str) -> List[Tuple[str, bool]]:
        _, lines = self.call(f"WHO {_word(room)}")
        return [(w[2], w[3] == "online") for w in (l.split(" ") for l in lines) if len(w) >= 4 and w[0] == "WHO"]

    def typing(self, room: str, typing: bool = True) -> None:
        self.call(f"TYPING {_word(room)}" + ("" if typing else " stop"))

    def read(self, room: str, seq: int) -> int:
        return int(self.call(f"READ {_word(room)} {seq}")[0][1])

    def call(self, command: str, timeout: Optional[float] = None) -> Tuple[List[str], List[str]]:
        """Any command, labelled; returns (OK fields, the reply's other lines). Made again
        after a reconnect if the connection dropped first: use it for repeatable commands."""
        if "\n" in command or "\r" in command:
            raise ValueError("a command is one line")
        deadline = time.monotonic() + (timeout if timeout is not None else self.connect_timeout)
        while True:
            self._wait_logged_in(deadline)
            label = self._issue("", command, "caller")
            while label not in self._replies:
                if time.monotonic() >= deadline:
                    self._awaiting.pop(label, None)
                    raise Timeout(f"the reply to {command!r}")
                self.pump(deadline)
            outcome = self._replies.pop(label)
            if outcome == "lost":
                continue
            if isinstance(outcome, Refused):
                raise outcome
            return outcome

    def quit(self) -> None:
        if self._sock is not None:
            try:
                self._sock.sendall(b"QUIT\n")
                deadline = time.monotonic() + 1.0
                for _ in range(10000):
                    line = self._read_line(deadline)
                    if line is None or line.startswith("BYE"):
                        break
            except OSError:
                pass
            self._close()
        self._ended = Ended("quit", "closed by the application")

    # ---- the engine ----------------------------------------------------------------------

    def pump(self, deadline: float) -> None:
        """One step: handle one line, resend what a rate limit deferred, or (re)connect."""
        if self._ended is not None:
            raise self._ended
        self._resend_deferred()
        now = time.monotonic()
        if self._sock is None:
            if now < self._reconnect_at:
                time.sleep(max(0.0, min(self._reconnect_at, deadline) - now))
            else:
                self._open()
            return
        wake = min([deadline] + [at for at, _ in self._delayed])
        try:
            line = self._read_line(wake)
        except OSError:
            self._connection_lost("connection-lost")
            return
        if line is not None:
            self._handle_line(line)

    def _read_line(self, deadline: float) -> Optional[str]:
        """A line, or None at the deadline; OSError when the connection is over."""
        for _ in range(1_000_000):
            at = self._unread.find(b"\n")
            if at >= 0:
                raw, self._unread = self._unread[:at], self._unread[at + 1:]
                return raw.decode("utf-8", "replace").rstrip("\r")
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                raise OSError("connection closed")
            self._unread += chunk
        return None

    def _open(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock, self._unread = sock, b""
            hello = self._read_line(time.monotonic() + self.connect_timeout)
        except OSError:
            hello = None
        if hello is None or not hello.startswith("HELLO"):
            # ERR server-full, ERR too-many-connections, a refused connect: later.
            self._close()
            self._schedule_reconnect(None)
            return
        if self._rate is not None:
            self._tokens, self._refilled = self._rate[0], time.monotonic()
        for room in self._rooms.values():
            room.begin_sync()  # hold lines from OK LOGIN on: live lines precede the replay
        self._issue("", "INFO", "info")
        login = f"LOGIN {self.user}"
        if self.device:
            login += f" device={self.device}"
        if self.password:
            login += f" password={self.password}"
        self._issue("", login, "login")

    def _close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None

    def _schedule_reconnect(self, pause: Optional[float]) -> None:
        if pause is None:
            pause = self._backoff * (1.0 - random.random() / 4)  # jitter: not all at once
        self._reconnect_at = time.monotonic() + pause
        self._backoff = min(self._backoff * 2, self.max_backoff)

    def _connection_lost(self, reason: str, pause: Optional[float] = None) -> None:
        self._close()
        self._logged_in = False
        for label, awaiting in self._awaiting.items():
            if awaiting["purpose"] == "caller":
                self._replies[label] = "lost"
        self._awaiting.clear()
        self._delayed.clear()
        self._events.append(Event("disconnected", reason=reason))
        self._schedule_reconnect(pause)

    def _issue(self, tags: str, command: str, purpose: str, arg: str = "") -> str:
        self._next_label += 1
        label = f"c{self._next_label}"
        line = f"@{label}{tags} {command}"
        self._awaiting[label] = {"line": line, "purpose": purpose, "arg": arg, "lines": []}
        self._write(line)
        return label

    def _write(self, line: str) -> None:
        if self._rate is not None:
            burst, rate = self._rate
            now = time.monotonic()
            self._tokens = min(burst, self._tokens + (now - self._refilled) * rate) - 1
            self._refilled = now
            if self._tokens < 0 and rate > 0:
                time.sleep(-self._tokens / rate)
        if self._sock is None:
            return
        try:
            self._sock.settimeout(10.0)
            self._sock.sendall(line.encode("utf-8") + b"\n")
        except OSError:
            self._connection_lost("connection-lost")

    def _resend_deferred(self) -> None:
        now = time.monotonic()
        due = [label for at, label in self._delayed if at <= now]
        self._delayed = [(at, label) for at, label in self._delayed if at > now]
        for label in due:
            if label in self._awaiting:
                self._write(self._awaiting[label]["line"])

    def _handle_line(self, raw: str) -> None:
        label, line = None, raw
        if raw.startswith("@") and " " in raw:
            label, line = raw[1:].split(" ", 1)
        verb, _, rest = line.partition(" ")
        if label is not None and label in self._awaiting:
            return self._on_reply(label, verb, rest, line)
        words = rest.split(" ")
        if verb == "MSG":
            msg = Message.parse(rest)
            if msg:
                self._on_message(msg, False)
        elif verb in ("JOINED", "LEFT", "INVITED", "KICKED") and len(words) == 2:
            if verb == "KICKED":
                self._forget(words[0])
            self._events.append(Event(verb.lower(), room=words[0], user=words[1]))
        elif verb == "PRESENCE" and len(words) >= 2:
            self._events.append(Event("presence", user=words[0], online=words[1] == "online"))
        elif verb == "TYPING" and len(words) >= 2:
            self._events.append(Event("typing", room=words[0], user=words[1], typing=len(words) == 2))
        elif verb == "READ" and len(words) == 3 and words[2].isdigit():
            self._events.append(Event("read", room=words[0], user=words[1], seq=int(words[2])))
        elif verb == "BYE":
            fields, text = _split_text(rest)
            self._on_bye(fields.split(" ")[0], text)
        elif verb == "ERR":
            code, text = _split_text(rest)
            self._events.append(Event("refused", code=code, text=text))

    def _on_reply(self, label: str, verb: str, rest: str, line: str) -> None:
        awaiting = self._awaiting[label]
        purpose, arg = awaiting["purpose"], awaiting["arg"]
        if verb == "MSG" and purpose == "sync":
            msg = Message.parse(rest)
            if msg:
                self._on_message(msg, msg.room == arg)
        elif verb == "GAP" and purpose == "sync":
            room, first, last = rest.split(" ")[:3]
            if room in self._rooms:
                self._rooms[room].on_gap(int(first), int(last))
        elif verb == "EPOCH" and purpose == "sync":
            room, epoch = _split_text(rest)[0].split(" ")[:2]
            if room in self._rooms:
                out: list = []
                self._rooms[room].on_epoch(room, epoch, out)
                self._events.extend(out)
        elif verb == "OK":
            del self._awaiting[label]
            words = rest.split(" ")
            self._on_ok(label, awaiting, words[0].upper(), words[1:])
        elif verb == "ERR":
            code, text = _split_text(rest)
            if code == "rate-limited":
                ms = text[len("retry in "):-2] if text.startswith("retry in ") and text.endswith("ms") else ""
                wait = int(ms) / 1000 if ms.isdigit() else 1.0
                self._delayed.append((time.monotonic() + wait, label))
                return
            del self._awaiting[label]
            self._on_err(label, awaiting, code, text)
        elif verb == "BYE":
            fields, text = _split_text(rest)
            self._on_bye(fields.split(" ")[0], text)
        else:
            awaiting["lines"].append(line)

    def _on_ok(self, label: str, awaiting: dict, verb: str, fields: List[str]) -> None:
        purpose, arg = awaiting["purpose"], awaiting["arg"]
        if purpose == "info":
            if _field(fields, "rate-limit") == "off":
                self._rate = None
            elif _field(fields, "rate-burst") and _field(fields, "rate-per-second"):
                self._rate = (float(_field(fields, "rate-burst")), float(_field(fields, "rate-per-second")))
        elif purpose == "login":
            self._logged_in = True
            self._backoff = self.initial_backoff
            if self._ever_logged_in:
                self._events.append(Event("reconnected"))
            self._ever_logged_in = True
            self._issue("", "ROOMS", "rooms")
        elif purpose == "rooms":
            self._resume_rooms(awaiting["lines"])
        elif purpose == "rejoin":
            self._on_joined(fields, resuming=True)
        elif purpose == "sync":
            self._on_sync_page(arg, fields)
        elif purpose == "send":
            self._on_sent(arg, verb, fields)
        else:
            if verb == "JOIN":
                self._on_joined(fields, resuming=False)
            elif verb == "LEAVE" and fields:
                self._forget(fields[0])
            self._replies[label] = (fields, awaiting["lines"])

    def _on_err(self, label: str, awaiting: dict, code: str, text: str) -> None:
        purpose, arg = awaiting["purpose"], awaiting["arg"]
        what = awaiting["line"].split(" ", 1)[1]
        if purpose == "login":
            self._ended = Ended(code, text)
            self._close()
        elif purpose in ("rejoin", "sync"):
            # The room cannot be read any more: hand on what was held, forget it.
            if arg in self._rooms:
                out: list = []
                self._rooms[arg].release(arg, out)
                self._events.extend(out)
            self._forget(arg)
            self._events.append(Event("refused", room=arg, code=code, text=f"{what}: {text}"))
        elif purpose == "send":
            # Nothing was posted and the cid is free again: drop the send.
            self._pending = [p for p in self._pending if p[0] != arg]
            if arg in self._waiting_sends:
                self._waiting_sends.discard(arg)
                self._send_outcomes[arg] = Refused(code, text)
            else:
                self._events.append(Event("refused", cid=arg, code=code, text=text))
        elif purpose == "caller":
            self._replies[label] = Refused(code, text)

    def _on_bye(self, reason: str, text: str) -> None:
        if reason in ("registered", "password-changed", "quit") or (
                reason == "replaced" and self.replaced_pause is None):
            self._connection_lost(reason)
            self._ended = Ended(reason, text)
            return
        pause = {"replaced": self.replaced_pause, "flooding": self.flooding_pause,
                 # Every line before the BYE was read: our cursors are exact. Resume at once.
                 "slow-consumer": 0.0}.get(reason)
        self._connection_lost(reason, pause)

    def _resume_rooms(self, lines: List[str]) -> None:
        listed = {}
        for line in lines:
            words = line.split(" ")
            if len(words) > 2 and words[0] == "ROOM" and _field(words, "seq") and _field(words, "epoch"):
                listed[words[1]] = (_field(words, "epoch"), int(_field(words, "seq")))
        for room in list(self._rooms):
            if room in listed:
                if not self._rooms[room].epoch:
                    self._rooms[room].epoch = listed[room][0]
                self._start_sync(room)
            else:
                self._issue("", f"JOIN {room}", "rejoin", room)
        for room, (epoch, seq) in listed.items():
            if room in self._rooms:
                continue
            # A direct room started while we were away: read all of it; another room
            # joined elsewhere: follow it from now.
            start = 0 if room.startswith("dm:") else seq
            self._rooms[room] = _Room(epoch, start)
            self._delivered[room] = (epoch, start)
            if start < seq:
                self._start_sync(room)
        for cid, verb, to, body in list(self._pending):
            self._issue_send(cid, verb, to, body)

    def _start_sync(self, room: str) -> None:
        order = self._rooms.get(room)
        if order is None:
            return
        after = order.begin_sync()
        epoch = f" epoch={order.epoch}" if order.epoch else ""
        self._issue("", f"SYNC {room} {after}{epoch}", "sync", room)

    def _on_sync_page(self, room: str, fields: List[str]) -> None:
        order = self._rooms.get(room)
        if order is None:
            return
        if not order.epoch and _field(fields, "epoch"):
            order.epoch = _field(fields, "epoch")
        out: list = []
        after = order.page_done(bool(fields) and fields[-1] == "more", room, out)
        self._events.extend(out)
        if after is not None:
            self._issue("", f"SYNC {room} {after} epoch={order.epoch}", "sync", room)

    def _on_joined(self, fields: List[str], resuming: bool) -> None:
        if not fields or _field(fields, "seq") is None:
            return
        room, seq, epoch = fields[0], int(_field(fields, "seq")), _field(fields, "epoch")
        order = self._rooms.get(room)
        if order is None:
            self._rooms[room] = _Room(epoch, seq)
            self._delivered[room] = (epoch, seq)
        elif resuming or ((order.epoch != epoch or seq > order.seq) and not order.syncing):
            self._start_sync(room)

    def _on_message(self, msg: Message, replayed: bool) -> None:
        if msg.room not in self._rooms:
            # A room we did not know (a new direct room): it starts with this message.
            self._rooms[msg.room] = _Room("", msg.seq - 1)
            self._delivered[msg.room] = ("", msg.seq - 1)
        out: list = []
        hole = self._rooms[msg.room].on_message(msg, replayed, out)
        self._events.extend(out)
        if hole and self._logged_in:
            self._start_sync(msg.room)

    def _on_sent(self, cid: str, verb: str, fields: List[str]) -> None:
        at = 1 if verb == "DM" else 0
        if len(fields) < at + 3 or not any(p[0] == cid for p in self._pending):
            return  # a second OK of a send retried twice: already counted
        self._pending = [p for p in self._pending if p[0] != cid]
        sent = {"cid": cid, "room": fields[at], "seq": int(fields[at + 1]), "id": fields[at + 2]}
        if cid in self._waiting_sends:
            self._waiting_sends.discard(cid)
            self._send_outcomes[cid] = sent
        else:
            self._events.append(Event("sent", room=sent["room"], seq=sent["seq"], cid=cid))

    def _enqueue(self, verb: str, to: str, body: str) -> str:
        if "\n" in body or "\r" in body:
            raise ValueError("a body cannot hold a line break")
        _word(to)
        if self._ended is not None:
            raise self._ended
        cid = uuid.uuid4().hex
        self._pending.append((cid, verb, to, body))
        if self._logged_in:
            self._issue_send(cid, verb, to, body)
        return cid

    def _issue_send(self, cid: str, verb: str, to: str, body: str) -> None:
        self._issue(f";cid={cid}", f"{verb.upper()} {to} {body}", "send", cid)

    def _send_and_wait(self, verb: str, to: str, body: str) -> dict:
        deadline = time.monotonic() + self.connect_timeout
        cid = self._enqueue(verb, to, body)
        self._waiting_sends.add(cid)
        while cid not in self._send_outcomes:
            if time.monotonic() >= deadline:
                self._waiting_sends.discard(cid)
                raise Timeout(f"the OK of send {cid} (still pending, will be retried)")
            self.pump(deadline)
        outcome = self._send_outcomes.pop(cid)
        if isinstance(outcome, Refused):
            raise outcome
        return outcome

    def _wait_logged_in(self, deadline: float) -> None:
        while not self._logged_in:
            if time.monotonic() >= deadline:
                raise Timeout("login")
            self.pump(deadline)

    def _forget(self, room: str) -> None:
        self._rooms.pop(room, None)
        self._delivered.pop(room, None)

    def _note_delivered(self, event: Event) -> None:
        if event.kind not in ("message", "gap", "epoch-reset"):
            return
        known = self._rooms[event.room].epoch if event.room in self._rooms else ""
        epoch, _ = self._delivered.get(event.room, ("", 0))
        if event.kind == "epoch-reset":
            self._delivered[event.room] = (event.epoch, 0)
        else:
            self._delivered[event.room] = (epoch or known, event.to if event.kind == "gap" else event.seq)


def _word(name: str) -> str:
    if not name or any(c in name for c in " \r\n"):
        raise ValueError(f"{name!r} is not a name")
    return name
