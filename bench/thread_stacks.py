#!/usr/bin/env python3
"""How much of each session thread's stack a chatd keeps resident, and how deep commands go.

    bench/thread_stacks.py target/release/chatd                # 200 sessions, read at once
    WAIT=3 bench/thread_stacks.py target/release/chatd         # ... and after 3 s quiet
    COMMANDS='LOGIN u$i\\nJOIN r\\n' bench/thread_stacks.py target/release/chatd

Starts the binary on 127.0.0.1 (memory store, no rate limit, no HTTP), connects SESSIONS
clients (default 200) that each send COMMANDS (default: LOGIN, JOIN, SEND; `$i` is the
client's number), reads what comes back, waits WAIT seconds, then reads the server's
/proc/PID/smaps and /proc/PID/mem:

- resident KiB of every reader stack (the 256 KiB mappings) and writer stack (128 KiB),
  as a histogram;
- how deep the readers' stacks were ever touched: the distance from the top of each reader
  stack to its lowest non-zero byte (a page that was touched and handed back reads as zero).

Linux only; run as a user who may read the server's /proc/PID/mem (its owner).
"""

import collections
import os
import re
import socket
import subprocess
import sys
import time

READER_STACK_KIB = 256
WRITER_STACK_KIB = 128


def main():
    binary = sys.argv[1]
    sessions = int(os.environ.get("SESSIONS", "200"))
    wait = float(os.environ.get("WAIT", "0.5"))
    commands = os.environ.get("COMMANDS", "LOGIN u$i\\nJOIN r$r\\nSEND r$r hello\\n")
    commands = commands.replace("\\n", "\n")
    port = int(os.environ.get("PORT", "17990"))
    server = subprocess.Popen(
        [binary, "--store", "memory", "--listen", f"127.0.0.1:{port}",
         "--http-listen", "none", "--no-rate-limit", "--log-level", "warn",
         "--names-per-minute", "1000000", "--rooms-per-minute", "1000000"],
        stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        clients = []
        for i in range(sessions):
            client = socket.create_connection(("127.0.0.1", port))
            lines = commands.replace("$i", str(i)).replace("$r", str(i % 20))
            client.sendall(lines.encode())
            clients.append(client)
        time.sleep(1.0)
        for client in clients:
            client.setblocking(False)
            try:
                while client.recv(65536):
                    pass
            except OSError:
                pass
        time.sleep(wait)
        report(server.pid)
    finally:
        server.kill()


def report(pid):
    resident = collections.Counter()
    stacks = []
    mapping = None
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            match = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
            if match:
                start, end = int(match.group(1), 16), int(match.group(2), 16)
                mapping = (start, end, (end - start) // 1024)
                continue
            if line.startswith("Rss:") and mapping[2] in (READER_STACK_KIB, WRITER_STACK_KIB):
                kind = "reader" if mapping[2] == READER_STACK_KIB else "writer"
                resident[(kind, int(line.split()[1]))] += 1
                if kind == "reader":
                    stacks.append(mapping)
    for (kind, kib), count in sorted(resident.items()):
        print(f"{kind} stacks with {kib} KiB resident: {count}")
    depths = []
    with open(f"/proc/{pid}/mem", "rb") as mem:
        for start, end, _ in stacks:
            mem.seek(start)
            data = mem.read(end - start)
            lowest = next((i for i, byte in enumerate(data) if byte), None)
            if lowest is not None:
                depths.append(end - start - lowest)
    if depths:
        depths.sort()
        print(f"reader stacks touched from the top: median {depths[len(depths) // 2]} bytes, "
              f"min {depths[0]}, max {depths[-1]}")
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS", "Threads")):
                print(line.strip())


if __name__ == "__main__":
    main()
