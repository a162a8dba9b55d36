"""A pytest plugin for running irctest (github.com/progval/irctest, checked out elsewhere)
with its external-server controller against a server restarted before every test, so no
test sees the users, rooms or accounts an earlier one left behind. chatd keeps room
membership across disconnects (that is its model), so without this a test finds the nicks
of earlier tests still in its channels.

    cd /path/to/irctest
    FRESH_SERVER_CMD='chatd --listen 127.0.0.1:17878 --irc-listen 127.0.0.1:16667 --store memory --no-rate-limit --presence-grace 0' \\
    IRCTEST_SERVER_HOSTNAME=127.0.0.1 IRCTEST_SERVER_PORT=16667 \\
    PYTHONPATH=/path/to/chatd/bench/irctest python3 -m pytest -p fresh_server \\
        --controller=irctest.controllers.external_server \\
        -m 'not Ergo and not deprecated and not strict and not services'

bench/irctest/README.md has the runs for chatd, ngIRCd and InspIRCd.
"""

import os
import shlex
import socket
import subprocess
import time

_server = None


def _stop():
    global _server
    if _server is not None:
        _server.terminate()
        try:
            _server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _server.kill()
            _server.wait()
        _server = None


def _start():
    global _server
    _stop()
    command = shlex.split(os.environ["FRESH_SERVER_CMD"])
    _server = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    host = os.environ["IRCTEST_SERVER_HOSTNAME"]
    port = int(os.environ["IRCTEST_SERVER_PORT"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{command[0]} did not listen on {host}:{port} within 10 s")


def pytest_runtest_setup(item):
    _start()


def pytest_sessionfinish(session, exitstatus):
    _stop()
