#!/usr/bin/env python3
"""Logger: appends every message of a room to a file, one line each, and resumes after a
restart of itself or of the server without a gap and without a duplicate.

    python3 logger.py --room general --out general.log [--state general.state] [--seconds 0]

The resume state (the room's epoch and last seq, and any unsent sends) is saved after each
log line, by write-then-rename. A logger killed between the line and the state would write
that line again on start, so on start the cursor is moved to the last seq in the log.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import chatd  # noqa: E402


def last_logged_seq(path):
    """The seq of the last line in the log (lines start with the seq), or None."""
    if not os.path.exists(path):
        return None
    last = None
    with open(path, encoding="utf-8") as log:
        for line in log:
            head = line.split(" ", 1)[0]
            if head.isdigit():
                last = int(head)
    return last


def save_state(path, state):
    # Write then rename: a crash leaves the old state or the new one, never half of one.
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(state.dumps())
    os.replace(path + ".tmp", path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7878)
    parser.add_argument("--room", default="general")
    parser.add_argument("--user", default="logger")
    parser.add_argument("--out", required=True)
    parser.add_argument("--state")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: never)")
    args = parser.parse_args()
    state_path = args.state or args.out + ".state"
    state = None
    if os.path.exists(state_path):
        with open(state_path, encoding="utf-8") as f:
            state = chatd.ResumeState.loads(f.read())
        # The log may be one line ahead of the state (killed between the two writes).
        logged = last_logged_seq(args.out)
        if logged is not None and args.room in state.rooms:
            epoch, seq = state.rooms[args.room]
            state.rooms[args.room] = (epoch, max(seq, logged))
    client = chatd.Client.connect(args.host, args.port, args.user, device="logger", state=state)
    client.join(args.room)
    stop_at = time.monotonic() + args.seconds if args.seconds else None
    with open(args.out, "a", encoding="utf-8") as log:
        while stop_at is None or time.monotonic() < stop_at:
            wait = 1.0 if stop_at is None else max(0.0, min(1.0, stop_at - time.monotonic()))
            event = client.next_event(wait)
            if event is None:
                continue
            if event.kind == "message" and event.room == args.room:
                m = event.message
                log.write(f"{m.seq} {m.sent_at} {m.sender} {m.body}\n")
            elif event.kind == "gap" and event.room == args.room:
                log.write(f"# messages {event.seq}-{event.to} are gone from the server\n")
            elif event.kind == "epoch-reset" and event.room == args.room:
                log.write(f"# history reset (epoch {event.epoch})\n")
            else:
                continue
            log.flush()
            save_state(state_path, client.resume_state())
    client.quit()


if __name__ == "__main__":
    main()
