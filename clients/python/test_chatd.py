"""chatd.py against the real chatd binary (CHATD_BIN, default target/debug/chatd).

Whatever happens to the connection (a server restart, kill -9 mid-flood, a slow-consumer
cut), the application sees every message exactly once, in order, and every send is stored
once. Every wait has a deadline.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chatd  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHATD_BIN = os.environ.get("CHATD_BIN", os.path.join(ROOT, "target", "debug", "chatd"))
PATIENCE = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The chatd binary on a fixed loopback port and SQLite file, so it can be restarted."""

    def __init__(self, *extra):
        self.dir = tempfile.TemporaryDirectory()
        self.port = free_port()
        self.extra = list(extra)
        self.proc = None
        self.start()

    def start(self):
        args = [CHATD_BIN, "--listen", f"127.0.0.1:{self.port}", "--data",
                os.path.join(self.dir.name, "chatd.db"), "--sync", "normal",
                "--http-listen", "none"] + self.extra
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        for line in self.proc.stderr:  # bounded: the process prints a few lines, then listens
            if line.startswith("chatd: listening on"):
                threading.Thread(target=self.proc.stderr.read, daemon=True).start()
                return
            if time.monotonic() > deadline:
                break
        raise RuntimeError("chatd did not start listening")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def client(self, user, **options):
        options.setdefault("device", "test")
        options.setdefault("initial_backoff", 0.01)
        options.setdefault("max_backoff", 0.2)
        return chatd.Client.connect("127.0.0.1", self.port, user, **options)

    def stored_bodies(self, room):
        """Every body the store holds for room, by SYNC from 0 (paging on `more`)."""
        auditor = self.client("auditor", device=None)
        auditor.join(room)
        bodies, after = [], 0
        for _ in range(1000):
            fields, lines = auditor.call(f"SYNC {room} {after}")
            for line in lines:
                msg = chatd.Message.parse(line[4:]) if line.startswith("MSG ") else None
                if msg:
                    bodies.append(msg.body)
                    after = msg.seq
            if fields[-1] != "more":
                auditor.quit()
                return bodies
        raise AssertionError("SYNC kept saying more")


def collect(client, room, count):
    """count messages of room, and the reasons of the disconnects seen on the way."""
    deadline = time.monotonic() + PATIENCE
    messages, drops = [], []
    while len(messages) < count:
        event = client.next_event(max(0.0, deadline - time.monotonic()))
        if event is None:
            raise AssertionError(f"{count} messages of {room}: got {len(messages)}")
        if event.kind == "message" and event.room == room:
            messages.append(event.message)
        elif event.kind == "disconnected":
            drops.append(event.reason)
        elif event.kind in ("gap", "epoch-reset"):
            raise AssertionError(f"SQLite history has no {event.kind}")
    return messages, drops


@unittest.skipUnless(os.path.exists(CHATD_BIN), f"no chatd binary at {CHATD_BIN} (cargo build)")
class AgainstTheBinary(unittest.TestCase):
    def assertExactlyOnceInOrder(self, messages, first=1):
        self.assertEqual([m.seq for m in messages], list(range(first, first + len(messages))))
        bodies = [m.body for m in messages]
        self.assertEqual(len(bodies), len(set(bodies)), "a body delivered twice")

    def assertStoredOnce(self, stored, sent):
        for body in sent:
            self.assertEqual(stored.count(body), 1, f"{body!r} stored {stored.count(body)} times")

    def test_a_restart_loses_and_repeats_nothing(self):
        """SIGTERM and a restart on the same file: resumed in order, queued sends stored once."""
        server = Server("--no-rate-limit")
        self.addCleanup(server.stop)
        alice, bob = server.client("alice"), server.client("bob")
        alice.join("lobby")
        bob.join("lobby")
        for i in range(20):
            bob.send("lobby", f"bob before {i}")
        sent = [f"alice across {i}" for i in range(10)]
        for body in sent:
            alice.send_nowait("lobby", body)
        server.stop()
        server.start()
        for i in range(20):
            bob.send("lobby", f"bob after {i}")
        alice.flush(PATIENCE)
        messages, drops = collect(alice, "lobby", 50)
        self.assertExactlyOnceInOrder(messages)
        self.assertIn("server-shutdown", drops)
        self.assertStoredOnce(server.stored_bodies("lobby"), sent)

    def test_kill_9_mid_flood_loses_and_repeats_nothing(self):
        """kill -9 while another client floods, then a restart: all of it once, in order."""
        server = Server("--no-rate-limit")
        self.addCleanup(server.stop)
        alice, bob = server.client("alice"), server.client("bob")
        alice.join("flood")
        bob.join("flood")
        bodies = [f"flood {i}" for i in range(300)]
        failures = []

        def flood():
            try:
                for body in bodies:
                    bob.send("flood", body)
            except Exception as e:  # reported by the main thread
                failures.append(e)

        flooder = threading.Thread(target=flood)
        flooder.start()
        first, _ = collect(alice, "flood", 100)
        server.kill9()
        server.start()
        rest, drops = collect(alice, "flood", 200)
        flooder.join(PATIENCE)
        self.assertFalse(flooder.is_alive())
        self.assertEqual(failures, [])
        self.assertExactlyOnceInOrder(first + rest)
        self.assertIn("connection-lost", drops)
        stored = server.stored_bodies("flood")
        self.assertEqual(len(stored), 300)
        self.assertStoredOnce(stored, bodies)

    def test_a_slow_consumer_cut_loses_and_repeats_nothing(self):
        """A client that stops reading is cut off, resumes by itself, and misses nothing."""
        server = Server("--no-rate-limit", "--channel-capacity", "16")
        self.addCleanup(server.stop)
        alice, bob = server.client("alice"), server.client("bob")
        alice.join("busy")
        bob.join("busy")
        filler = "x" * 4000
        posted = 0
        while posted < 8000:  # bounded: far past any socket buffer
            bob.send("busy", f"{posted} {filler}")
            posted += 1
            if posted % 200 == 0 and self.slow_consumers(bob) > 0:
                break
        self.assertGreater(self.slow_consumers(bob), 0, "alice was cut off")
        messages, drops = collect(alice, "busy", posted)
        self.assertExactlyOnceInOrder(messages)
        self.assertIn("slow-consumer", drops)

    @staticmethod
    def slow_consumers(client):
        fields, _ = client.call("STATS")
        return int(chatd._field(fields, "slow_consumers"))

    def test_a_saved_resume_state_continues_without_a_gap(self):
        """A new process resumes from a saved state: only what came after, outbox sent once."""
        server = Server("--no-rate-limit")
        self.addCleanup(server.stop)
        bob, logger = server.client("bob"), server.client("logger")
        bob.join("log")
        logger.join("log")
        for i in range(10):
            bob.send("log", f"first {i}")
        self.assertExactlyOnceInOrder(logger.expect_messages("log", 10, 10))
        saved = logger.resume_state().dumps()
        logger.quit()
        for i in range(10):
            bob.send("log", f"second {i}")
        state = chatd.ResumeState.loads(saved)
        state.pending.append(("logger-1", "send", "log", "from the outbox"))
        logger = server.client("logger", state=state)
        logger.flush(10)
        second = logger.expect_messages("log", 11, 10)
        self.assertExactlyOnceInOrder(second, 11)
        self.assertEqual(second[-1].body, "from the outbox")
        self.assertStoredOnce(server.stored_bodies("log"), ["from the outbox"])

    def test_requests_return_values(self):
        """DM, WHO, HISTORY, READ and a refusal, through the same labelled calls."""
        server = Server()
        self.addCleanup(server.stop)
        alice, bob = server.client("alice"), server.client("bob")
        self.assertEqual(alice.join("team")["seq"], 0)
        bob.join("team")
        self.assertEqual(alice.send("team", "one")["seq"], 1)
        self.assertEqual([m.body for m in bob.history("team", 10)], ["one"])
        self.assertEqual(bob.who("team"), [("alice", True), ("bob", True)])
        self.assertEqual(bob.read("team", 1), 1)
        self.assertEqual(alice.dm("bob", "psst")["room"], "dm:alice:bob")
        self.assertEqual(bob.expect_messages("dm:alice:bob", 1, 5)[0].body, "psst")
        with self.assertRaises(chatd.Refused):
            alice.send("nowhere", "x")


class WithoutAServer(unittest.TestCase):
    def test_resume_state_round_trips(self):
        state = chatd.ResumeState({"general": ("5f0c1e2a9b3d4c6e", 44), "dm:a:b": ("", 3)},
                                  [("m-17", "send", "general", "yes!  two spaces"), ("m-18", "dm", "bob", "psst")])
        self.assertEqual(chatd.ResumeState.loads(state.dumps()), state)
        with self.assertRaises(ValueError):
            chatd.ResumeState.loads("chatd-resume 2\n")

    def test_live_lines_wait_for_the_replay(self):
        """protocol.md's walkthrough: live 44 first, then the replay 42, 43, 44."""
        room, out = chatd._Room("e", 41), []
        room.begin_sync()
        msg = lambda seq: chatd.Message("general", seq, f"id{seq}", "", "bob", f"m{seq}")  # noqa: E731
        room.on_message(msg(44), False, out)
        for seq in (42, 43, 44):
            room.on_message(msg(seq), True, out)
        self.assertEqual(out, [])
        self.assertIsNone(room.page_done(False, "general", out))
        room.on_message(msg(45), False, out)
        self.assertEqual([e.seq for e in out], [42, 43, 44, 45])

    def test_a_gap_is_delivered_in_order(self):
        room, out = chatd._Room("e", 1), []
        room.begin_sync()
        room.on_gap(2, 3)
        room.on_message(chatd.Message("r", 4, "i", "", "b", "x"), True, out)
        room.page_done(False, "r", out)
        self.assertEqual([(e.kind, e.seq) for e in out], [("gap", 2), ("message", 4)])


if __name__ == "__main__":
    unittest.main()
