"""The network layer's own timers and threads (issue 24), against a real onaird.

- Pings are sent by onaird itself (not by a libwebsockets policy per connection): a peer that
  never answers one is closed, a peer that answers stays open.
- server.network_threads: a topic publish reaches subscribers on every thread; the
  per-address connection limit counts the connections of all threads.
- Frames queued for one socket leave several per write (pre-built frame headers): they
  arrive whole and in order.
"""
import asyncio
import json
import os
import re
import select
import socket
import struct
import time

import pytest
import websockets

from test_websocket import answer_pings, call, frame, next_of, raw_ws, run


def read_frames(s, until_eof_s=15):
    """Every frame the server sends until it closes the TCP connection: [(opcode, payload)].
    Never answers a ping."""
    s.settimeout(until_eof_s)
    try:
        data = b"".join(iter(lambda: s.recv(65536), b""))
    except (socket.timeout, ConnectionResetError):
        return None  # not closed by the server
    return [(b0 & 0x0F, p) for b0, p in parse_frames(data)[0]]


@pytest.mark.parametrize("event_loop", ["libev", "poll"])
def test_peer_that_never_answers_a_ping_is_closed(server_factory, event_loop):
    """On either server.event_loop: onaird's deadlines (lws timers) fire on both (lws on libev
    services its timer list only after I/O: net.c kicks it every 100 ms)."""
    s = server_factory(plugins={"testkit": {}, "hello": {}},
                       core={"server": {"ws_ping_interval": 1, "event_loop": event_loop}}).start()
    want = "libev (epoll)" if event_loop == "libev" else "poll()"
    assert re.search(r"\d+ network threads? on " + re.escape(want), s.log()), s.log()
    sk, head = raw_ws(s.port)
    assert b" 101 " in head.split(b"\r\n")[0], head
    frames = read_frames(sk)
    sk.close()
    assert frames is not None, "a dead peer was not closed"
    assert any(op == 0x9 for op, _ in frames), frames  # it was pinged first


@pytest.mark.parametrize("event_loop", ["libev", "poll"])
def test_peer_that_answers_pings_stays_open(server_factory, event_loop):
    s = server_factory(plugins={"testkit": {}, "hello": {}},
                       core={"server": {"ws_ping_interval": 1, "event_loop": event_loop}}).start()
    sk, head = raw_ws(s.port)
    assert b" 101 " in head.split(b"\r\n")[0], head
    pings = answer_pings(sk, 5)  # several ping intervals and pong deadlines
    assert pings >= 2, pings
    sk.sendall(frame(0x1, json.dumps({"type": "testkit.whoami", "id": "w"}).encode()))
    sk.settimeout(5)
    reply = sk.recv(65536)
    assert b'"id":"w"' in reply.replace(b" ", b""), reply
    sk.close()


def test_pings_off_keeps_idle_peers(server_factory):
    s = server_factory(plugins={"testkit": {}, "hello": {}},
                       core={"server": {"ws_ping_interval": 0}}).start()

    async def scenario():
        async with websockets.connect(s.ws_url, ping_interval=None) as ws:
            await asyncio.sleep(3)
            r = await call(ws, "testkit.whoami")
            assert r["type"] == "result"
    run(scenario())


# ---- several network threads ----------------------------------------------------------------
def net_threads(s):
    """The names of onaird's network threads."""
    task = f"/proc/{s.proc.pid}/task"
    names = []
    for tid in os.listdir(task):
        try:
            with open(f"{task}/{tid}/comm") as f:
                names.append(f.read().strip())
        except FileNotFoundError:
            pass
    return sorted(n for n in names if n.startswith("onair-net"))


def test_publish_reaches_subscribers_on_every_network_thread(server_factory):
    """20 subscribers on a server with 2 network threads: the kernel spreads them over both
    listeners (all 20 on one thread: probability 2^-19), each thread fans the one message out
    to its own."""
    s = server_factory(plugins={"testkit": {}, "hello": {}},
                       core={"server": {"network_threads": 2}}).start()
    assert net_threads(s) == ["onair-net0", "onair-net1"]

    async def scenario():
        subs = [await websockets.connect(s.ws_url) for _ in range(20)]
        try:
            for ws in subs:
                r = await call(ws, "hello.join", {"room": "threads"})
                assert r["data"] == {"joined": "threads"}
            r = await call(subs[0], "hello.say", {"room": "threads", "text": "to all"})
            assert r["type"] == "result"
            for ws in subs:
                msg = await next_of(ws, "hello.said")
                assert msg["data"]["text"] == "to all"
            # a message to one connection reaches just that one, whichever thread owns it
            for ws in subs[:4]:
                r = await call(ws, "testkit.whoami")
                assert r["type"] == "result"
        finally:
            for ws in subs:
                await ws.close()
    run(scenario())


def closed_by_peer(sk):
    try:
        return sk.recv(16) == b""
    except ConnectionResetError:
        return True


def test_connections_per_address_hold_across_network_threads(server_factory):
    s = server_factory(plugins={"testkit": {}},
                       core={"server": {"network_threads": 2,
                                        "max_connections_per_address": 10}}).start()
    socks = [socket.create_connection(("127.0.0.1", s.port), timeout=5) for _ in range(16)]
    try:
        time.sleep(0.5)
        # the server closed 6 of them at once (EOF or reset), whichever thread accepted them
        readable, _, _ = select.select(socks, [], [], 0.5)
        assert sum(map(closed_by_peer, readable)) == 6 == len(readable), len(readable)
        for sk in socks:
            sk.close()
        time.sleep(0.3)
        r = s.http("GET", "/api/v1/testkit/config")
        assert r.status == 200, r
    finally:
        for sk in socks:
            sk.close()


def parse_frames(data):
    """Whole server frames in data: ([(opcode, payload)], rest)."""
    frames = []
    while len(data) >= 2:
        n, off = data[1] & 0x7F, 2
        if len(data) < {126: 4, 127: 10}.get(n, 2):
            break  # the rest of the header is still on its way
        if n == 126:
            n, off = struct.unpack("!H", data[2:4])[0], 4
        elif n == 127:
            n, off = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < off + n:
            break
        frames.append((data[0], data[off:off + n]))
        data = data[off + n:]
    return frames, data


def test_frames_queued_for_a_slow_reader_arrive_whole_and_in_order(server_factory):
    """6 MB of messages to a reader that does not read meanwhile: they back up in its queue
    and leave several frames per write; every one arrives as a whole text frame, in order."""
    s = server_factory(plugins={"testkit": {}},
                       core={"server": {"ws_send_queue_bytes": 32 * 1024 * 1024}}).start()
    sk, head = raw_ws(s.port, rcvbuf=4096)
    assert b" 101 " in head.split(b"\r\n")[0], head
    sk.sendall(frame(0x1, json.dumps({"type": "testkit.flood", "id": "f",
                                      "data": {"count": 3000, "bytes": 2000}}).encode()))
    time.sleep(1)  # not reading: the kernel's buffers fill, the rest queues in onaird
    seen, rest = [], b""
    while len(seen) < 3000:
        chunk = sk.recv(65536)
        assert chunk, f"closed after {len(seen)} messages"
        more, rest = parse_frames(rest + chunk)
        for b0, p in more:
            assert b0 == 0x81, hex(b0)  # FIN + text
            msg = json.loads(p)
            if msg["type"] == "testkit.flood":
                assert len(msg["data"]["pad"]) == 2000
                seen.append(msg["data"]["i"])
    assert seen == list(range(3000))
    sk.close()
