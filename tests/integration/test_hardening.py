"""Issue 14, written as the attacks: anonymous floods must not take the server down.

Every flood is bounded in count and time and goes to 127.0.0.1. The attacker connects from
127.0.0.1; where a per-address limit is the point, the legitimate client connects from
127.0.0.2 (another loopback address: its own budget). During each flood a legitimate client
must still be served with the harness's normal timeout, and onaird's resident memory
(VmRSS in /proc/<pid>/status) may grow by less than RSS_BOUND_KB over the flood.

H1  one anonymous WebSocket floods store-backed messages: rate limits, messages in flight per
    connection, and the work pool's bounded queue
H2  anonymous logins with random names: hashing on its own bounded pool, per-address login limit
M2  connection bursts and trickled bodies: connections per address, body timeout
Low 1009 for oversize messages, the last admin, 503 details, log lines
"""
import asyncio
import http.client
import json
import os
import re
import select
import socket
import threading
import time

import pytest
import websockets

from onair_harness import PLUGIN_DIR, Server, make_token, request
from store_support import Congo, storage_config, unique_db

RSS_BOUND_KB = 150 * 1024  # onaird may grow by less than 150 MB over a flood
# Under AddressSanitizer freed memory waits in a quarantine (256 MB by default) before it is
# returned: keep it small so RSS measures what onaird holds (no effect on other builds).
ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:quarantine_size_mb=16"}
ATTACKER = "127.0.0.1"
CLIENT = "127.0.0.2"  # the legitimate client, from another address
PW = "correct horse battery staple"
API_KEY = "backend1"
API_SECRET = "api-secret-0123456789-abcdefghijklmnop"


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def rss_kb(s):
    with open(f"/proc/{s.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for onaird")


def http_from(s, source, method, path, body=None, token=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=timeout,
                                      source_address=(source, 0))
    try:
        return request(conn, method, path, body, None, token)
    finally:
        conn.close()


def ws_connect(s, source=ATTACKER, **kw):
    kw.setdefault("max_size", 2 ** 24)
    return websockets.connect(s.ws_url, local_addr=(source, 0), **kw)


async def call(ws, type_, data=None, timeout=10):
    """One message and its answer (other frames are skipped)."""
    id_ = os.urandom(4).hex()
    await ws.send(json.dumps({"type": type_, "id": id_, "data": data or {}}))
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if msg.get("id") == id_:
            return msg


async def flood(ws, type_, data, count):
    """Send count messages as fast as possible while reading every answer; returns
    {answer kind: n} where the kind is "result" or the error code."""
    kinds = {}
    done = asyncio.Event()

    async def reader():
        n = 0
        while n < count:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if "id" not in msg:
                continue  # an event, not an answer
            kind = "result" if msg["type"] == "result" else msg["data"]["code"]
            kinds[kind] = kinds.get(kind, 0) + 1
            n += 1
        done.set()

    task = asyncio.ensure_future(reader())
    for i in range(count):
        await ws.send(json.dumps({"type": type_, "id": i, "data": data}))
    await task
    return kinds


def metric(s, reason):
    body = s.http("GET", "/metrics").body
    m = re.search(r'onair_refused_total\{reason="%s"\} (\d+)' % reason, body)
    assert m, body
    return int(m.group(1))


def lines(s, pattern):
    return [l for l in s.log().splitlines() if re.search(pattern, l)]


def streams_plugin():
    return {"path": os.path.join(PLUGIN_DIR, "streams.so"),
            "config": {"categories": ["talk"], "test_routes": True}}


class Legit(threading.Thread):
    """A legitimate client that keeps making one request during a flood, from CLIENT; every
    answer is kept (the test asserts them)."""

    def __init__(self, s, method, path, body=None):
        super().__init__(daemon=True)
        self.s, self.method, self.path, self.body = s, method, path, body
        self.stop = threading.Event()
        self.statuses = []

    def run(self):
        while not self.stop.is_set():
            r = http_from(self.s, CLIENT, self.method, self.path, self.body)
            self.statuses.append((r.status, r.body[:200]))
            time.sleep(0.05)

    def finish(self):
        self.stop.set()
        self.join(30)
        assert not self.is_alive()
        return self.statuses


# ---- H1: one anonymous WebSocket queues storage work ----------------------------------------
def test_h1_websocket_flood_of_store_reads_is_cut_off(server_factory):
    """20,000 streams.watch (each one a store read) from one anonymous WebSocket: the default
    per-connection rate limit and the in-flight cap answer rate_limited / busy at once; a
    store-backed REST read and another WebSocket are served meanwhile."""
    s = server_factory(plugins={"streams": streams_plugin(), "testkit": {}},
                       core={"auth": {"password_hash": "interactive"}}, env=ENV).start()
    before = rss_kb(s)
    legit = Legit(s, "GET", "/api/v1/streams")
    legit.start()

    async def scenario():
        async with ws_connect(s, max_queue=None) as attacker, \
                ws_connect(s, source=CLIENT) as other:
            task = asyncio.ensure_future(
                flood(attacker, "streams.watch", {"stream_id": "0" * 24}, 20000))
            await asyncio.sleep(0.2)
            r = await call(other, "testkit.whoami")  # the other WebSocket is served
            assert r["type"] == "result", r
            kinds = await task
            r = await call(other, "streams.watch", {"stream_id": "0" * 24})
            assert r["data"]["code"] == "stream_not_found", r  # reached the store
            return kinds

    kinds = run(scenario())
    statuses = legit.finish()
    after = rss_kb(s)
    assert sum(kinds.values()) == 20000, kinds  # every message answered, none queued forever
    assert kinds.get("rate_limited", 0) > 15000, kinds
    assert kinds.get("stream_not_found", 0) < 1000, kinds  # only those let through
    assert statuses and all(st == 200 for st, _ in statuses), statuses
    assert after - before < RSS_BOUND_KB, (before, after)
    assert metric(s, "ws_rate_limited") > 15000
    # the refusals were logged, once per interval rather than once per message
    assert 1 <= len(lines(s, r"over their rate limit refused")) <= 3, s.log()[-3000:]


def test_h1_messages_in_flight_are_capped_per_connection(server_factory):
    """With the rates raised out of the way, one connection never has more than
    server.ws_max_inflight messages waiting: the rest get busy (503) at once, the work pool
    (whose queue is larger than the cap) is never full, another connection is served."""
    s = server_factory(plugins={"testkit": {}},
                       core={"server": {"ws_max_inflight": 8, "work_threads": 2,
                                        "work_queue": 16},
                             "rate_limits": {"ws.message": "1000000/1s",
                                             "ws.message_ip": "1000000/1s"}}, env=ENV).start()
    before = rss_kb(s)

    async def scenario():
        async with ws_connect(s, max_queue=None) as attacker, \
                ws_connect(s, source=CLIENT) as other:
            task = asyncio.ensure_future(flood(attacker, "testkit.work", {"ms": 20}, 2000))
            await asyncio.sleep(0.2)
            r = await call(other, "testkit.work", {"ms": 1}, timeout=10)
            assert r["type"] == "result" and r["data"] == {"worked": True}, r
            return await task

    kinds = run(scenario())
    assert sum(kinds.values()) == 2000, kinds
    assert kinds.get("busy", 0) > 1000, kinds
    assert kinds.get("result", 0) >= 8, kinds
    assert set(kinds) <= {"busy", "result"}, kinds  # never "unavailable": the pool had room
    assert metric(s, "work_pool_full") == 0
    assert metric(s, "ws_busy") == kinds["busy"]
    assert rss_kb(s) - before < RSS_BOUND_KB


def test_h1_full_work_pool_fails_fast_with_503(server_factory):
    """The work pool's queue is bounded: with its one thread busy and its queue full, a
    store call answers 503 unavailable with Retry-After at once (logged once), and the
    store works again when the queue has drained."""
    s = server_factory(plugins={"testkit": {}, "storetest": {}},
                       core={"server": {"work_threads": 1, "work_queue": 2}}).start()
    st = lambda: http_from(s, CLIENT, "POST", "/api/v1/storetest/items/count", {})  # noqa: E731
    assert st().status == 200

    async def scenario():
        async with ws_connect(s) as ws:
            # the thread runs a 3 s job, two short ones wait: the queue is full meanwhile
            ids = [0, 1, 2]
            await ws.send(json.dumps({"type": "testkit.work", "id": 0, "data": {"ms": 3000}}))
            await asyncio.sleep(0.3)
            for i in ids[1:]:
                await ws.send(json.dumps({"type": "testkit.work", "id": i, "data": {"ms": 10}}))
            await asyncio.sleep(0.2)
            r = await call(ws, "testkit.work", {"ms": 1})
            assert r["type"] == "error" and r["data"]["code"] == "unavailable", r
            assert r["data"]["status"] == 503, r
            full = await asyncio.get_running_loop().run_in_executor(None, st)
            answers = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in ids]
            assert all(a["type"] == "result" for a in answers), answers
            return full

    full = run(scenario())
    assert full.status == 503, full
    assert full.json()["code"] == "unavailable" and full.header("Retry-After"), full
    assert st().status == 200  # drained: served again
    assert metric(s, "work_pool_full") >= 2
    assert len(lines(s, r"warn .*the work pool .* is full")) == 1, s.log()[-3000:]


def test_h1_default_message_limits_are_overridable_per_type(server_factory):
    """Every message type without a limit of its own gets the defaults (ws.message per
    connection, ws.message_ip per address), each type counted apart; rate_limits: can set one
    type's pair (ws.message.<type>) without touching the others."""
    s = server_factory(plugins={"testkit": {}},
                       core={"rate_limits": {"ws.message.testkit.whoami": "3/1m",
                                             "ws.message_ip": "5/1m"}}).start()

    async def scenario():
        async with ws_connect(s) as a, ws_connect(s) as b:
            got = [(await call(a, "testkit.whoami"))["type"] for _ in range(4)]
            assert got == ["result"] * 3 + ["error"], got
            r = await call(a, "testkit.whoami")
            assert r["data"]["code"] == "rate_limited" and r["data"]["retry_after_ms"] > 0, r
            # testkit.later follows ws.message (100/10s) and ws.message_ip (5/1m, overridden):
            # five from this address, on two connections, then refused for both
            got = [(await call(ws, "testkit.later"))["type"] for ws in (a, b, a, b, a, b)]
            assert got == ["result"] * 5 + ["error"], got
        async with ws_connect(s, source=CLIENT) as c:  # another address has its own budget
            assert (await call(c, "testkit.later"))["type"] == "result"

    run(scenario())


# ---- H2: anonymous logins with random user names ---------------------------------------------
def test_h2_login_flood_does_not_starve_storage(server_factory):
    """Logins with random names from one address for a few seconds: each would cost an
    argon2id verify. Hashing has its own small pool (busy 503 when its queue is full) and
    auth.login_ip limits attempts per address (429), both with Retry-After; store reads of
    other clients never wait for a storage worker, and a real user logs in from elsewhere."""
    s = server_factory(plugins={"storetest": {}},
                       core={"auth": {"password_hash": "interactive", "hash_threads": 1,
                                      "hash_queue": 2},
                             "storage": {"timeout_ms": 1000},
                             "rate_limits": {"auth.login_ip": "30/1m"}}, env=ENV).start()
    r = s.http("POST", "/api/v1/auth/register",
               body={"username": "realuser", "email": "real@example.org", "password": PW})
    assert r.status == 201, r
    before = rss_kb(s)
    results = []
    lock = threading.Lock()
    stop = time.time() + 4

    def attacker():
        while time.time() < stop:
            name = "x" + os.urandom(6).hex()
            r = http_from(s, ATTACKER, "POST", "/api/v1/auth/login",
                          {"username": name, "password": "wrong password 123"}, timeout=30)
            with lock:
                results.append((r.status, r.json().get("code"), r.header("Retry-After")))

    reads = Legit(s, "POST", "/api/v1/storetest/items/count", {})
    threads = [threading.Thread(target=attacker, daemon=True) for _ in range(12)]
    reads.start()
    for t in threads:
        t.start()
    time.sleep(1)
    # the real user, from another address, retrying on 503 busy as its Retry-After says
    for attempt in range(20):
        r = http_from(s, CLIENT, "POST", "/api/v1/auth/login",
                      {"username": "realuser", "password": PW}, timeout=30)
        if r.status != 503:
            break
        assert r.json()["code"] == "busy" and r.header("Retry-After"), r
        time.sleep(int(r.header("Retry-After")))
    assert r.status == 200 and r.json()["access_token"], r
    for t in threads:
        t.join(60)
    statuses = reads.finish()
    after = rss_kb(s)
    codes = {(st, code) for st, code, _ in results}
    assert codes <= {(401, "invalid_credentials"), (429, "rate_limited"), (503, "busy")}, codes
    assert (429, "rate_limited") in codes and (503, "busy") in codes, codes
    assert all(ra and int(ra) >= 1 for st, _, ra in results if st in (429, 503)), results
    assert sum(1 for st, _, _ in results if st == 401) <= 30  # auth.login_ip: 30 a minute
    # store reads were never refused or timed out waiting for a worker
    assert statuses and all(st == 200 for st, _ in statuses), statuses
    assert "timed out waiting for a storage worker" not in s.log()
    assert after - before < RSS_BOUND_KB, (before, after)
    assert metric(s, "hash_pool_full") >= 1
    assert 1 <= len(lines(s, r"warn .*password hashing queue .* is full")) <= 2


# ---- M2: connection bursts, trickled bodies ---------------------------------------------------
def test_m2_connections_per_address_are_capped(server_factory):
    s = server_factory(plugins={"testkit": {}},
                       core={"server": {"max_connections_per_address": 50}}, env=ENV).start()
    before = rss_kb(s)
    socks = [socket.create_connection(("127.0.0.1", s.port), timeout=5) for _ in range(60)]
    try:
        time.sleep(0.5)
        # the ones the server closed are readable (EOF or reset); the 50 others are idle
        readable, _, _ = select.select(socks, [], [], 0.5)
        closed = 0
        for sk in readable:
            try:
                closed += sk.recv(16) == b""
            except ConnectionResetError:
                closed += 1
        assert closed == 10 and len(readable) == 10, (closed, len(readable))
        # another address is not affected while this one is at its cap
        r = http_from(s, CLIENT, "GET", "/api/v1/server")
        assert r.status == 200, r
        for sk in socks[:5]:
            sk.close()
        time.sleep(0.3)
        # a fresh connection from the capped address works again
        r = http_from(s, ATTACKER, "GET", "/api/v1/testkit/config")
        assert r.status == 200, r
    finally:
        for sk in socks:
            sk.close()
    assert metric(s, "connection_cap") == 10
    assert len(lines(s, r"warn .*server.max_connections_per_address")) == 1, s.log()[-3000:]
    assert rss_kb(s) - before < RSS_BOUND_KB


def test_m2_trickled_body_is_closed_after_the_body_timeout(server_factory):
    """One byte of body every half second: lws' own timeout (between two reads) never
    fires; server.body_timeout ends the request with 408 and closes the connection."""
    s = server_factory(plugins={"testkit": {}}, core={"server": {"body_timeout": 2}}).start()
    sk = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    sk.sendall(b"POST /api/v1/testkit/body HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
    answer, closed, sent = b"", False, 0
    sk.settimeout(0.5)
    try:
        for _ in range(30):  # 15 s of trickling at most
            try:
                sk.sendall(b"a")
                sent += 1
            except OSError:
                closed = True
                break
            try:
                chunk = sk.recv(4096)
                if not chunk:
                    closed = True
                    break
                answer += chunk
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed = True
                break
    finally:
        sk.close()
    assert closed, (sent, answer)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"code":"request_timeout"' in answer, answer
    assert sent < 30
    assert metric(s, "body_timeout") == 1
    assert s.http("POST", "/api/v1/testkit/body", body="x" * 10).status == 200


# ---- Low items ----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [70 * 1024, 2 * 1024 * 1024])
def test_oversize_websocket_message_closes_with_1009(server, size):
    """Also when the rest of a large message is still arriving after the refusal."""
    async def scenario():
        async with ws_connect(server) as ws:
            await ws.send(json.dumps({"type": "testkit.whoami", "data": {"p": "x" * size}}))
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except websockets.ConnectionClosed as e:
                return e.code
        return None

    assert run(scenario()) == 1009
    assert server.http("GET", "/healthz").status == 200


def test_the_last_enabled_admin_cannot_be_disabled_or_demoted(server_factory):
    s = server_factory(plugins={},
                       core={"auth": {"password_hash": "interactive",
                                      "api_keys": [f"{API_KEY}:{API_SECRET}"]}}).start()
    backend = make_token(sub="backend", roles=("admin",), secret=API_SECRET, iss=API_KEY)

    def register(name):
        r = s.http("POST", "/api/v1/auth/register",
                   body={"username": name, "email": name + "@example.org", "password": PW})
        assert r.status == 201, r
        return r.json()

    def patch(uid, token, **body):
        return s.http("PATCH", f"/api/v1/admin/users/{uid}", body=body, token=token)

    ann = register("ann")
    uid = ann["user"]["id"]
    assert patch(uid, backend, roles=["viewer", "admin"]).status == 200
    r = s.http("POST", "/api/v1/auth/login", body={"username": "ann", "password": PW})
    tok = r.json()["access_token"]
    for body in ({"disabled": True}, {"roles": ["viewer"]}):
        r = patch(uid, tok, **body)  # herself, the only admin account
        assert r.status == 409 and r.json()["code"] == "last_admin", r
        r = patch(uid, backend, **body)  # nor anyone else
        assert r.status == 409 and r.json()["code"] == "last_admin", r
    assert s.http("GET", "/api/v1/admin/users", token=tok).status == 200  # still admin
    bob = register("bob")
    assert patch(bob["user"]["id"], tok, roles=["viewer", "admin"]).status == 200
    r = patch(uid, tok, disabled=True)  # another enabled admin exists now
    assert r.status == 200 and r.json()["user"]["disabled"] is True, r
    r = patch(bob["user"]["id"], bob["access_token"], roles=["viewer"])  # bob is the last one
    assert r.status == 409 and r.json()["code"] == "last_admin", r


@pytest.fixture
def congo():
    c = Congo().start()
    yield c
    c.stop()


def test_503_details_do_not_show_internal_names(server_factory, congo):
    """A database outage answers 503 unavailable with Retry-After; the database's error
    (collection names, driver text) goes to the log, once per interval, not to the client."""
    s = server_factory(plugins={"storetest": {}},
                       core={"storage": storage_config("mongodb", uri=congo.uri,
                                                       database=unique_db(), timeout_ms=1000)})
    s.start()
    assert s.http("POST", "/api/v1/storetest/items/count", body={}).status == 200
    congo.stop()
    answers = []
    deadline = time.time() + 30
    while time.time() < deadline and len(answers) < 3:
        r = s.http("POST", "/api/v1/storetest/items/count", body={}, timeout=30)
        if r.status == 503:
            answers.append(r)
    assert len(answers) == 3, answers
    for r in answers:
        p = r.json()
        assert p["code"] == "unavailable" and r.header("Retry-After"), p
        assert p["detail"] == "temporarily unavailable", p  # no collection, no driver text
        assert "mongo" not in r.body and "storetest.items" not in r.body, p
    logged = lines(s, r"warn .*503 unavailable for POST /api/v1/storetest/\{coll\}/\{op\}: ")
    assert logged and "storetest.items" in logged[0], s.log()[-3000:]
    assert len(logged) <= 2, logged  # 3 refusals within the interval: one line (two at a edge)
