"""A client that has sent text frames keeps its connection through onaird's pings.

Regression: onaird's ping carried a binary payload (a raw timestamp). libwebsockets 4.1
checks a pong's payload as UTF-8 once the peer has sent a text frame, so every client
that had sent anything (a join, a chat message) was closed with 1007 "bad utf8" at its
first ping. The existing ping test only sent a text frame after the pings.
"""
import asyncio
import json
import socket

import websockets

from test_websocket import call, frame, raw_ws, run


def answer_pings(sk, seconds):
    """Reads for `seconds`, answering each ping with a pong echoing its payload. Returns
    the number of pings answered; fails if the server closes the connection."""
    sk.settimeout(0.5)
    pings, buf = 0, b""
    for _ in range(int(seconds * 2)):
        try:
            c = sk.recv(65536)
        except socket.timeout:
            continue
        assert c, f"closed after {pings} answered pings; last bytes {buf[:40]!r}"
        buf += c
        while len(buf) >= 2 and len(buf) >= 2 + (buf[1] & 0x7F):
            op, n = buf[0] & 0x0F, buf[1] & 0x7F
            assert n < 126, buf[:8]
            payload, buf = buf[2:2 + n], buf[2 + n:]
            assert op != 0x8, f"close frame {payload!r}"
            if op == 0x9:
                sk.sendall(frame(0xA, payload))
                pings += 1
    return pings


def whoami(sk, ident):
    sk.sendall(frame(0x1, json.dumps({"type": "testkit.whoami", "id": ident}).encode()))
    sk.settimeout(5)
    reply = b""
    while f'"id":"{ident}"'.encode() not in reply.replace(b" ", b""):
        c = sk.recv(65536)
        assert c, reply
        reply += c


def test_text_frame_then_pings_stays_open(server_factory):
    s = server_factory(plugins={"testkit": {}, "hello": {}},
                       core={"server": {"ws_ping_interval": 1}}).start()
    sk, head = raw_ws(s.port)
    assert b" 101 " in head.split(b"\r\n")[0], head
    whoami(sk, "before")  # a text frame first: what every real client sends
    assert answer_pings(sk, 5) >= 2
    whoami(sk, "after")
    sk.close()


def test_library_client_that_talked_survives_pings(server_factory):
    """The websockets library answers pings itself, echoing the payload, as browsers do."""
    s = server_factory(plugins={"testkit": {}, "hello": {}},
                       core={"server": {"ws_ping_interval": 1}}).start()

    async def scenario():
        async with websockets.connect(s.ws_url, ping_interval=None) as ws:
            r = await call(ws, "hello.join", {"room": "pings"})
            assert r["data"] == {"joined": "pings"}
            await asyncio.sleep(4)  # several pings and pong deadlines
            r = await call(ws, "testkit.whoami")
            assert r["type"] == "result"
    run(scenario())
