#!/usr/bin/env python3
"""Echo bot: joins a room and answers every message of others with "echo: <body>".

    python3 echo_bot.py [--host 127.0.0.1] [--port 7878] [--room general] [--max 0]

It survives server restarts (the client reconnects and resumes) and never echoes a message
twice (each message is delivered once). --max N stops after N echoes (0: never).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import chatd  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7878)
    parser.add_argument("--room", default="general")
    parser.add_argument("--user", default="echobot")
    parser.add_argument("--max", type=int, default=0)
    args = parser.parse_args()
    bot = chatd.Client.connect(args.host, args.port, args.user, device="bot")
    bot.join(args.room)
    echoed = 0
    for event in bot.events():
        if event.kind == "message" and event.room == args.room and event.message.sender != args.user:
            bot.send(args.room, f"echo: {event.message.body}")
            echoed += 1
            if args.max and echoed >= args.max:
                break
        elif event.kind == "disconnected":
            print(f"disconnected ({event.reason}), resuming", file=sys.stderr)
    bot.quit()


if __name__ == "__main__":
    main()
