#!/usr/bin/env python3
"""Load script: N clients each post M messages to one room, then report throughput.

    python3 load.py [--port 7878] [--clients 4] [--messages 200] [--seconds 30]

Loopback only (it refuses other hosts), bounded in count and in time. Each client is a
chatd.Client, so it paces itself by the server's INFO; run chatd with --no-rate-limit to
measure the server rather than the rate limit.
"""

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import chatd  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "localhost", "::1"])
    parser.add_argument("--port", type=int, default=7878)
    parser.add_argument("--room", default="load")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    if not 1 <= args.clients <= 64 or not 1 <= args.messages <= 100_000:
        parser.error("--clients 1..64, --messages 1..100000")
    stop_at = time.monotonic() + args.seconds
    sent = [0] * args.clients
    errors = []

    def post(i):
        try:
            client = chatd.Client.connect(args.host, args.port, f"load{i}", device="load")
            client.join(args.room)
            for n in range(args.messages):
                if time.monotonic() >= stop_at:
                    break
                client.send(args.room, f"load{i} {n}")
                sent[i] += 1
                while client.next_event(0) is not None:  # drain echoes: read while writing
                    pass
            client.quit()
        except chatd.ChatdError as e:
            errors.append(f"load{i}: {e}")

    started = time.monotonic()
    threads = [threading.Thread(target=post, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, stop_at - time.monotonic()) + 10)
    elapsed = time.monotonic() - started
    total = sum(sent)
    print(f"{total} messages acknowledged in {elapsed:.2f} s: {total / elapsed:.0f}/s")
    for error in errors:
        print(error, file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
