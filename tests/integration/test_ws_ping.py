"""A client that has sent text frames keeps its connection through onaird's pings.

Regression: onaird's ping carried a binary payload (a raw timestamp). libwebsockets 4.1
checks a pong's payload as UTF-8 once the peer has sent a text frame, so every client
that had sent anything (a join, a chat message) was closed with 1007 "bad utf8" at its
first ping. The existing ping test only sent a text frame after the pings.
"""
import asyncio
import json

import websockets

from test_websocket import answer_pings, call, frame, raw_ws, run


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
