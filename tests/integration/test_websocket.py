"""WebSocket against a real onaird: envelopes, topics, errors, limits, auth."""
import asyncio
import base64
import json
import os
import socket
import struct

import websockets

from onair_harness import make_token


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


# Messages received while waiting for something else, per connection, in order.
_stash = {}


async def call(ws, type_, data=None, id_=None):
    """Send a message and wait for the reply with the same id (others are kept)."""
    id_ = id_ or os.urandom(4).hex()
    await ws.send(json.dumps({"type": type_, "id": id_, "data": data or {}}))
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if msg.get("id") == id_:
            return msg
        _stash.setdefault(id(ws), []).append(msg)


async def next_of(ws, type_):
    """The next message of a type, including ones stashed by call()."""
    stash = _stash.setdefault(id(ws), [])
    for i, msg in enumerate(stash):
        if msg["type"] == type_:
            return stash.pop(i)
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if msg["type"] == type_:
            return msg


def test_two_clients_exchange_through_a_topic(server):
    async def scenario():
        async with websockets.connect(server.ws_url) as a, websockets.connect(server.ws_url) as b:
            r = await call(a, "hello.join", {"room": "lobby"})
            assert r["type"] == "result" and r["data"] == {"joined": "lobby"}
            await call(b, "hello.join", {"room": "lobby"})
            r = await call(a, "hello.say", {"room": "lobby", "text": "hi from a"})
            assert r["type"] == "result"
            for ws in (a, b):
                msg = await next_of(ws, "hello.said")
                assert msg["topic"] == "hello.room.lobby"
                assert msg["data"]["text"] == "hi from a"
            # a third client in another room sees nothing of it
            async with websockets.connect(server.ws_url) as c:
                await call(c, "hello.join", {"room": "other"})
                await call(b, "hello.say", {"room": "lobby", "text": "second"})
                assert (await next_of(a, "hello.said"))["data"]["text"] == "second"
                with_timeout = asyncio.wait_for(c.recv(), 0.5)
                try:
                    await with_timeout
                    raise AssertionError("client in another room received a message")
                except asyncio.TimeoutError:
                    pass
    run(scenario())


def test_errors_keep_the_connection_open(server):
    async def scenario():
        async with websockets.connect(server.ws_url) as ws:
            r = await call(ws, "nosuch.type", id_="e1")
            assert r["type"] == "error" and r["data"]["code"] == "unknown_type"
            await ws.send("this is not json")
            r = json.loads(await ws.recv())
            assert r["type"] == "error" and r["data"]["code"] == "invalid_json"
            await ws.send(json.dumps({"id": 5}))
            r = json.loads(await ws.recv())
            assert r["data"]["code"] == "invalid_message" and r["id"] == 5
            await ws.send("[" * 10000 + "]" * 10000)
            r = json.loads(await ws.recv())
            assert r["data"]["code"] in ("json_too_deep", "invalid_json")
            r = await call(ws, "hello.join", {"room": "BAD ROOM!"})
            assert r["type"] == "error" and r["data"]["code"] == "invalid_room"
            r = await call(ws, "testkit.bus", {"n": 0})
            assert r["type"] == "error" and r["data"]["code"] == "invalid_request"
            # still usable
            r = await call(ws, "testkit.whoami")
            assert r["type"] == "result" and r["data"] == {"user": None}
    run(scenario())


def test_bus_delivery_is_ordered_and_not_reentrant(server):
    async def scenario():
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(json.dumps({"type": "testkit.bus", "id": "b", "data": {"n": 20}}))
            first = json.loads(await ws.recv())
            # the reply was sent by the handler before any event was delivered
            assert first["type"] == "result" and first["id"] == "b"
            seqs = [json.loads(await ws.recv())["data"]["seq"] for _ in range(20)]
            assert seqs == list(range(20))
    run(scenario())


def test_pending_reply(server):
    async def scenario():
        async with websockets.connect(server.ws_url) as ws:
            r = await call(ws, "testkit.later")
            assert r["data"] == {"later": True}
    run(scenario())


def test_auth_on_websocket(server):
    async def scenario():
        async with websockets.connect(server.ws_url) as ws:
            r = await call(ws, "testkit.private")
            assert r["type"] == "error" and r["data"]["code"] == "unauthorized"
            r = await call(ws, "auth", {"token": "forged"})
            assert r["type"] == "error" and r["data"]["code"] == "invalid_token"
            r = await call(ws, "auth", {"token": make_token(sub="w1")})
            assert r["data"]["user"] == "w1"
            r = await call(ws, "testkit.private")
            assert r["data"] == {"user": "w1"}
        headers = {"Authorization": "Bearer " + make_token(sub="w2")}
        async with websockets.connect(server.ws_url, extra_headers=headers) as ws:
            assert (await call(ws, "testkit.whoami"))["data"] == {"user": "w2"}
        headers = {"Authorization": "Bearer " + make_token(exp_in=-1000)}
        async with websockets.connect(server.ws_url, extra_headers=headers) as ws:
            try:
                await asyncio.wait_for(ws.recv(), 10)
                raise AssertionError("expired token accepted")
            except websockets.ConnectionClosed as e:
                assert e.code == 1008
    run(scenario())


def test_slow_consumer_is_closed_and_others_are_fine(server_factory):
    s = server_factory(plugins={"testkit": {}},
                       core={"server": {"ws_send_queue_bytes": 65536}}).start()

    async def scenario():
        async with websockets.connect(s.ws_url, max_queue=1) as other:
            slow = await websockets.connect(s.ws_url, max_queue=1, max_size=2 ** 20)
            await slow.send(json.dumps({"type": "testkit.flood", "id": 1,
                                        "data": {"count": 20000, "bytes": 2000}}))
            await asyncio.sleep(3)  # never read: the server's queue for us overflows
            code = None
            try:
                while True:
                    await asyncio.wait_for(slow.recv(), 10)
            except websockets.ConnectionClosed as e:
                code = e.code
            assert code == 1008
            r = await call(other, "testkit.whoami")
            assert r["type"] == "result"
    run(scenario())
    m = s.http("GET", "/metrics").body
    assert "onair_ws_slow_consumer_closes_total 1" in m


def raw_ws(port, path="/ws", rcvbuf=None):
    s = socket.socket()
    if rcvbuf:  # a small receive window (set before connecting): the server's writes back up
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    return s, head


def frame(opcode, payload):
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        hdr = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return hdr + mask + masked


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


def read_close_code(s):
    data = b""
    try:
        while True:
            c = s.recv(65536)
            if not c:
                break
            data += c
    except socket.timeout:
        pass
    # find a close frame (opcode 8) from the server (unmasked)
    i = 0
    while i + 2 <= len(data):
        op = data[i] & 0x0F
        n = data[i + 1] & 0x7F
        j = i + 2
        if n == 126:
            n = struct.unpack("!H", data[j:j + 2])[0]
            j += 2
        elif n == 127:
            n = struct.unpack("!Q", data[j:j + 8])[0]
            j += 8
        if op == 8:
            return struct.unpack("!H", data[j:j + 2])[0] if n >= 2 else None
        i = j + n
    return None


def test_invalid_utf8_closes_1007(server):
    s, head = raw_ws(server.port)
    assert head.startswith(b"HTTP/1.1 101")
    s.sendall(frame(1, b'{"type":"x","data":"\xff\xfe"}'))
    assert read_close_code(s) == 1007
    s.close()
    assert server.http("GET", "/healthz").status == 200


def test_oversize_message_closes_1009(server_factory):
    s = server_factory(plugins={"testkit": {}},
                       core={"server": {"ws_max_message_bytes": 1024}}).start()
    sock, head = raw_ws(s.port)
    assert head.startswith(b"HTTP/1.1 101")
    sock.sendall(frame(1, b'{"type":"testkit.whoami","data":{"p":"' + b"x" * 4000 + b'"}}'))
    assert read_close_code(sock) == 1009
    sock.close()


def test_websocket_only_on_ws_path(server):
    s, head = raw_ws(server.port, path="/api/v1/testkit/config")
    assert not head.startswith(b"HTTP/1.1 101")
    s.close()


def test_signed_in_connections_hear_their_user_topic(server):
    async def scenario():
        hdr = {"Authorization": "Bearer " + make_token(sub="u-one")}
        async with websockets.connect(server.ws_url, extra_headers=hdr) as one, \
                websockets.connect(server.ws_url) as two, \
                websockets.connect(server.ws_url) as anon:
            # two signs in with the auth message as u-two
            r = await call(two, "auth", {"token": make_token(sub="u-two")})
            assert r["type"] == "result"
            r = await call(anon, "testkit.notify_user", {"user": "u-one"})
            assert r["data"] == {"sent": True}
            msg = await next_of(one, "testkit.note")
            assert msg["topic"] == "user.u-one" and msg["data"] == {"for": "u-one"}
            await call(anon, "testkit.notify_user", {"user": "u-two"})
            assert (await next_of(two, "testkit.note"))["data"] == {"for": "u-two"}
            # nobody else hears them
            try:
                await asyncio.wait_for(anon.recv(), 0.5)
                raise AssertionError("an anonymous connection heard a user topic")
            except asyncio.TimeoutError:
                pass
    run(scenario())
