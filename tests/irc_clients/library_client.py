"""A bot written with the `irc` package from PyPI (jaraco/irc), talking to chatd's IRC
listener: tests/irc_clients.rs runs it beside a line-protocol user.

It joins #lib, answers "ping from nc" in the room with "pong from python" and a DM to bob,
and leaves when bob DMs it "bye pybot". Exit status 0 only if all of that happened within
the deadline.

    python3 library_client.py HOST PORT
"""

import sys
import time

import irc.client

DEADLINE_SECONDS = 20


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    reactor = irc.client.Reactor()
    done = {"bye": False}
    conn = reactor.server().connect(host, port, "pybot", username="pybot", ircname="py bot")

    def on_welcome(connection, event):
        connection.join("#lib")

    def on_join(connection, event):
        if event.source.nick == "pybot":
            print("joined #lib", flush=True)

    def on_pubmsg(connection, event):
        if event.arguments[0] == "ping from nc":
            connection.privmsg("#lib", "pong from python")
            connection.privmsg("bob", "a direct hello")

    def on_privmsg(connection, event):
        if event.source.nick == "bob" and event.arguments[0] == "bye pybot":
            done["bye"] = True
            connection.quit("done")

    conn.add_global_handler("welcome", on_welcome)
    conn.add_global_handler("join", on_join)
    conn.add_global_handler("pubmsg", on_pubmsg)
    conn.add_global_handler("privmsg", on_privmsg)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not done["bye"] and time.monotonic() < deadline:
        reactor.process_once(0.2)
    sys.exit(0 if done["bye"] else 1)


if __name__ == "__main__":
    main()
