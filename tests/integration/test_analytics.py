"""Analytics plugin end to end against a real onaird with the streams, chat, Q&A, reactions, polls
and donations plugins, on both storage backends (sqlite and CongoDB for mongodb): a scripted live
stream (signed-in and anonymous WebSocket viewers joining and leaving, a REST viewer, chat,
reactions, questions, follows) gives exact numbers live and after the end; poll votes and
donations (per currency) as the polls and donations plugins publish them; the owner's dashboard hears
metrics.viewers; a restart mid-stream keeps the written buckets and counts nothing twice; who may
read (owner, stream moderator, admin; others 403; unknown 404); channel totals over a date range
and its bad ranges; the CSV export."""
import asyncio
import base64
import csv
import io
import json
import os
import time
from datetime import datetime, timedelta, timezone

import pytest
import websockets

from onair_harness import PLUGIN_DIR, Server, make_token
from store_support import Congo, storage_config, unique_db

BACKENDS = ["sqlite", "mongodb"]
PW = "correct horse battery staple"
API_KEY = "backend1"
API_SECRET = "api-secret-0123456789-abcdefghijklmnop"
BUCKET_S = 1


def api_token(roles=("admin",), sub="backend-admin"):
    return make_token(sub=sub, roles=roles, secret=API_SECRET, iss=API_KEY)


def plugins():
    def so(name, config=None):
        return {"path": os.path.join(PLUGIN_DIR, name + ".so"), "config": config or {}}
    return {"streams": so("streams", {"max_live_per_user": 10}), "chat": so("chat"),
            "qa": so("qa"), "reactions": so("reactions", {"limit_per_s": 100}),
            "moderation": so("moderation"), "polls": so("polls"),
            "donations": so("donations", {"provider": "test", "currencies": ["USD", "EUR"]}),
            "analytics": so("analytics", {"bucket_s": BUCKET_S, "dashboard_ms": 100})}


def core(backend):
    return {"auth": {"password_hash": "interactive", "api_keys": [f"{API_KEY}:{API_SECRET}"]},
            "storage": backend,
            "rate_limits": {"chat.send": "100000/1m", "qa.ask": "100000/1m",
                            "donations.create": "100000/1m"}}


@pytest.fixture(scope="module")
def congo():
    c = Congo().start()
    yield c
    c.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def srv(request):
    if request.param == "mongodb":
        backend = storage_config("mongodb", uri=request.getfixturevalue("congo").uri,
                                 database=unique_db())
    else:
        backend = {"backend": "sqlite"}
    s = Server(plugins=plugins(), core=core(backend)).start()
    s.backend = request.param
    yield s
    try:
        assert s.stop() == 0
    finally:
        s.kill()


# ---- helpers ---------------------------------------------------------------------------------
def claims(token):
    p = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


class Account:
    def __init__(self, srv, name):
        self.srv = srv
        self.username = name + base64.b32encode(os.urandom(5)).decode().lower()
        r = srv.http("POST", "/api/v1/auth/register",
                     {"username": self.username, "email": self.username + "@example.org",
                      "password": PW})
        assert r.status == 201, r
        self.token = r.json()["access_token"]
        self.id = claims(self.token)["sub"]

    def call(self, method, path, body=None, **kw):
        return self.srv.http(method, path, body, token=self.token, **kw)

    def headers(self):
        return {"Authorization": "Bearer " + self.token}


class Admin:
    def __init__(self, srv):
        self.srv, self.token = srv, api_token()

    def call(self, method, path, body=None, **kw):
        return self.srv.http(method, path, body, token=self.token, **kw)


def create(acct, **fields):
    body = {"title": "Analytics"}
    body.update(fields)
    r = acct.call("POST", "/api/v1/streams", body)
    assert r.status == 201, r
    sid = r.json()["stream"]["id"]
    r = acct.call("POST", f"/api/v1/streams/{sid}/start")
    assert r.status == 200, r
    return sid


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


class Client:
    """One WebSocket client that keeps what it received while waiting for something else."""

    def __init__(self, ws):
        self.ws, self.seen = ws, []

    async def call(self, type_, data):
        id_ = os.urandom(4).hex()
        await self.ws.send(json.dumps({"type": type_, "id": id_, "data": data}))
        return await self.wait(lambda m: m.get("id") == id_)

    async def ok(self, type_, data):
        m = await self.call(type_, data)
        assert m["type"] == "result", m
        return m["data"]

    async def wait(self, pred, timeout=15):
        for i, m in enumerate(self.seen):
            if pred(m):
                return self.seen.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"not received; saw {self.seen[-10:]}"
            m = json.loads(await asyncio.wait_for(self.ws.recv(), left))
            if pred(m):
                return m
            self.seen.append(m)


def connect(srv, acct=None):
    return websockets.connect(srv.ws_url, extra_headers=acct.headers() if acct else None)


def analytics(acct, sid, query=None):
    path = f"/api/v1/streams/{sid}/analytics" + (f"?{query}" if query else "")
    r = acct.call("GET", path)
    assert r.status == 200, r
    return r.json()


def wait_totals(acct, sid, pred, timeout=20):
    """Poll until the totals satisfy pred (reactions arrive per window, written buckets per
    bucket): waiting, not timing."""
    deadline = time.monotonic() + timeout
    while True:
        body = analytics(acct, sid)
        if pred(body["totals"]):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def bucket_writes(srv):
    r = srv.http("GET", "/api/v1/analytics/status", token=api_token())
    assert r.status == 200, r
    return r.json()["bucket_writes"]


def wait_written(srv, n=2):
    """Wait until n more buckets were written (with one live stream: the open one closed)."""
    start = bucket_writes(srv)
    deadline = time.monotonic() + 20
    while bucket_writes(srv) < start + n:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def problem(r, status, code, field=None):
    assert r.status == status, r
    body = r.json()
    assert body["code"] == code, body
    if field:
        assert body.get("field") == field, body
    return body


# ---- the scripted stream -----------------------------------------------------------------------
def test_scripted_stream(srv):
    owner, smod, stranger = Account(srv, "aown"), Account(srv, "asmod"), Account(srv, "astr")
    fan_a, fan_b, rest = Account(srv, "afana"), Account(srv, "afanb"), Account(srv, "arest")
    admin = Admin(srv)
    sid = create(owner)
    r = owner.call("PUT", f"/api/v1/streams/{sid}/moderators/{smod.id}")
    assert r.status == 200, r
    t0 = time.time()
    dash_seen = []

    async def scenario():
        async with connect(srv, owner) as o, connect(srv, fan_a) as a, \
                connect(srv, fan_b) as b1, connect(srv, fan_b) as b2, \
                connect(srv) as n1, connect(srv) as n2:
            O, A, B1, B2, N1, N2 = (Client(w) for w in (o, a, b1, b2, n1, n2))
            d = await O.ok("analytics.watch", {"stream_id": sid})
            assert d["watching"] == sid and d["metrics"]["live"] is True, d
            for c in (A, B1, B2, N1, N2):  # fan_b twice: one viewer
                assert (await c.ok("streams.watch", {"stream_id": sid}))["counted"] is True
            r = rest.call("POST", f"/api/v1/streams/{sid}/join")  # a REST viewer
            assert r.status == 200, r
            # the owner's dashboard hears the viewers, aggregated
            m = await O.wait(lambda m: m["type"] == "metrics.viewers"
                             and m["data"]["viewers"] == 5)
            assert m["topic"] == f"stream.{sid}.analytics" and m["data"]["stream"] == sid, m
            dash_seen.append(m)
            # fan_a leaves and comes back: one more join, still one unique viewer
            assert (await A.ok("streams.unwatch", {"stream_id": sid}))["unwatched"] is True
            await A.ok("streams.watch", {"stream_id": sid})
            # engagement
            for i in range(3):
                await A.ok("chat.send", {"stream_id": sid, "text": f"hello {i}"})
            await B1.ok("chat.send", {"stream_id": sid, "text": "hi"})
            await A.ok("qa.ask", {"stream_id": sid, "text": "How does it work?"})
            await B1.ok("qa.ask", {"stream_id": sid, "text": "And why?"})
            for name in ("heart", "heart", "fire"):
                assert (await B1.ok("reactions.send", {"stream_id": sid, "reaction": name}))
            for f in (fan_a, fan_b):
                r = f.call("POST", f"/api/v1/users/{owner.id}/follow")
                assert r.status == 201, r
            r = stranger.call("POST", f"/api/v1/users/{fan_a.id}/follow")  # not the owner
            assert r.status == 201, r
            live = wait_totals(owner, sid, lambda t: t["reactions"] == 3)
            t = live["totals"]
            assert live["live"] is True and t["viewers"] == 5, live
            assert t["unique_viewers"] == 5 and t["joins"] == 6 and t["leaves"] == 1, t
            assert t["chat_messages"] == 4 and t["questions"] == 2 and t["follows"] == 2, t
            assert t["reactions_by"] == {"heart": 2, "fire": 1}, t
            assert t["peak_viewers"] == 5, t
            rt = owner.call("GET", f"/api/v1/streams/{sid}/metrics/realtime")
            assert rt.status == 200 and rt.json()["viewers"] == 5, rt
            assert rt.json()["unique_viewers"] == 5, rt
            # anonymous viewers leave
        # every connection closed: viewers left

    run(scenario())
    elapsed_ms = (time.time() - t0) * 1000
    r = owner.call("POST", f"/api/v1/streams/{sid}/end")
    assert r.status == 200, r
    after = analytics(owner, sid)
    t = after["totals"]
    assert after["live"] is False and after["ended_at"] and after["started_at"], after
    assert t["viewers"] == 0 and t["unique_viewers"] == 5 and t["joins"] == 6, t
    assert t["leaves"] == 6, t  # five WebSocket viewers left, the REST one at the end
    assert t["chat_messages"] == 4 and t["questions"] == 2 and t["follows"] == 2, t
    assert t["reactions"] == 3 and t["peak_viewers"] == 5, t
    # five viewers watched at most the time the scenario took
    assert 0 < t["watch_ms"] <= 5 * elapsed_ms + 1000 * BUCKET_S, (t, elapsed_ms)
    assert t["average_watch_ms"] == t["watch_ms"] // 5, t
    assert after["bucket_s"] == BUCKET_S and after["series_count"] == len(after["series"])
    series = after["series"]
    assert series and all(b["minute"] % (BUCKET_S * 1000) == 0 for b in series), series
    assert sum(b["chat"] for b in series) == 4 and sum(b["unique"] for b in series) == 5
    assert all("new_viewers" not in b for b in series), series[0]
    # the end-of-stream summary is stored: the same totals
    deadline = time.monotonic() + 20
    while analytics(owner, sid)["summary"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    summary = analytics(owner, sid)["summary"]
    assert summary == {k: v for k, v in t.items() if k != "viewers"}, (summary, t)
    # follows after the end count for no stream
    late = Account(srv, "alate")
    assert late.call("POST", f"/api/v1/users/{owner.id}/follow").status == 201
    assert analytics(owner, sid)["totals"]["follows"] == 2

    # who may read
    for who in (smod, admin):
        assert analytics(who, sid)["totals"] == t
        assert who.call("GET", f"/api/v1/streams/{sid}/stats").json()["totals"] == t
    for path in ("analytics", "stats", "metrics/realtime", "analytics?format=csv"):
        problem(stranger.call("GET", f"/api/v1/streams/{sid}/{path}"), 403, "forbidden")
        problem(fan_a.call("GET", f"/api/v1/streams/{sid}/{path}"), 403, "forbidden")
        problem(srv.http("GET", f"/api/v1/streams/{sid}/{path}"), 401, "unauthorized")
        problem(owner.call("GET", f"/api/v1/streams/{'0' * 24}/{path}"), 404, "stream_not_found")
    problem(owner.call("GET", f"/api/v1/streams/{sid}/analytics?format=xls"), 400,
            "invalid_field", "format")

    async def strangers_dashboard():
        async with connect(srv, stranger) as s:
            m = await Client(s).call("analytics.watch", {"stream_id": sid})
            assert m["type"] == "error" and m["data"]["code"] == "forbidden", m
            m = await Client(s).call("analytics.watch", {"stream_id": "nope"})
            assert m["type"] == "error" and m["data"]["code"] == "invalid_field", m
            assert m["data"]["field"] == "stream_id", m

    run(strangers_dashboard())

    # CSV: one row per bucket, the same numbers
    r = owner.call("GET", f"/api/v1/streams/{sid}/analytics?format=csv")
    assert r.status == 200, r
    assert r.header("Content-Type").startswith("text/csv"), r
    rows = list(csv.DictReader(io.StringIO(r.body)))
    assert len(rows) == len(series), (rows, series)
    assert sum(int(x["chat"]) for x in rows) == 4 and sum(int(x["unique"]) for x in rows) == 5
    assert rows[0]["minute"].endswith("Z") and not rows[0]["minute"][0] in "=+-@"

    # channel totals over a date range
    day = datetime.now(timezone.utc).date()
    q = f"from={day - timedelta(days=1)}&to={day + timedelta(days=1)}"
    r = owner.call("GET", f"/api/v1/users/{owner.id}/analytics?{q}")
    assert r.status == 200, r
    ch = r.json()
    assert ch["user"] == owner.id and ch["totals"]["streams"] == 1, ch
    c = ch["totals"]
    assert c["unique_viewers"] == 5 and c["chat_messages"] == 4 and c["follows"] == 2, c
    assert c["questions"] == 2 and c["reactions"] == 3 and c["watch_ms"] == t["watch_ms"], c
    assert [s["stream"] for s in ch["streams"]] == [sid], ch
    assert admin.call("GET", f"/api/v1/users/{owner.id}/analytics?{q}").status == 200
    problem(stranger.call("GET", f"/api/v1/users/{owner.id}/analytics?{q}"), 403, "forbidden")
    path = f"/api/v1/users/{owner.id}/analytics"
    problem(owner.call("GET", f"{path}?from={day + timedelta(days=1)}&to={day}"), 400,
            "invalid_field", "from")
    problem(owner.call("GET", f"{path}?from={day - timedelta(days=400)}&to={day}"), 400,
            "invalid_field", "to")
    problem(owner.call("GET", f"{path}?from=last-week"), 400, "invalid_field", "from")
    r = owner.call("GET", f"{path}?from={day + timedelta(days=2)}&to={day + timedelta(days=3)}")
    assert r.status == 200 and r.json()["totals"]["streams"] == 0, r
    assert dash_seen


def test_restart_mid_stream(srv):
    owner, fan = Account(srv, "rown"), Account(srv, "rfan")
    sid = create(owner)

    async def before():
        async with connect(srv, fan) as a, connect(srv) as n:
            A, N = Client(a), Client(n)
            await A.ok("streams.watch", {"stream_id": sid})
            await N.ok("streams.watch", {"stream_id": sid})
            await A.ok("chat.send", {"stream_id": sid, "text": "before"})
            await A.ok("chat.send", {"stream_id": sid, "text": "before again"})
            wait_totals(owner, sid, lambda t: t["chat_messages"] == 2)
            wait_written(srv)  # the bucket holding the chat is written

    run(before())
    pre = analytics(owner, sid)["totals"]
    assert pre["unique_viewers"] == 2 and pre["chat_messages"] == 2, pre
    assert srv.stop() == 0
    srv.start()
    # written buckets survive the restart
    t = analytics(owner, sid)["totals"]
    assert t["unique_viewers"] == 2 and t["chat_messages"] == 2, t
    assert analytics(owner, sid)["live"] is True

    async def after():
        async with connect(srv, fan) as a, connect(srv) as n:
            A, N = Client(a), Client(n)
            await A.ok("streams.watch", {"stream_id": sid})  # seen before: not new
            await N.ok("streams.watch", {"stream_id": sid})  # a new connection: new
            await A.ok("chat.send", {"stream_id": sid, "text": "after"})
            wait_totals(owner, sid, lambda t: t["chat_messages"] == 3)
            wait_written(srv)

    run(after())
    r = owner.call("POST", f"/api/v1/streams/{sid}/end")
    assert r.status == 200, r
    t = analytics(owner, sid)["totals"]
    assert t["unique_viewers"] == 3 and t["chat_messages"] == 3, t  # nothing counted twice
    minutes = [b["minute"] for b in analytics(owner, sid)["series"]]
    assert minutes == sorted(set(minutes)), minutes  # one point per bucket


def test_unlisted_and_private_stay_hidden(srv):
    owner, stranger = Account(srv, "pown"), Account(srv, "pstr")
    sid = create(owner, visibility="private")
    problem(stranger.call("GET", f"/api/v1/streams/{sid}/analytics"), 404, "stream_not_found")
    assert analytics(owner, sid)["live"] is True
    assert Admin(srv).call("GET", f"/api/v1/streams/{sid}/analytics").status == 200
    assert owner.call("POST", f"/api/v1/streams/{sid}/end").status == 200


def test_removed_moderator_loses_the_dashboard(srv):
    owner, smod = Account(srv, "down"), Account(srv, "dmod")
    sid = create(owner)
    assert owner.call("PUT", f"/api/v1/streams/{sid}/moderators/{smod.id}").status == 200

    async def scenario():
        async with connect(srv, smod) as m, connect(srv, owner) as o, connect(srv) as v:
            M, O = Client(m), Client(o)
            assert (await M.ok("analytics.watch", {"stream_id": sid}))["watching"] == sid
            await O.ok("analytics.watch", {"stream_id": sid})
            r = owner.call("DELETE", f"/api/v1/streams/{sid}/moderators/{smod.id}")
            assert r.status == 200, r
            gone = await M.wait(lambda x: x["type"] == "analytics.unwatched")
            assert gone["data"] == {"stream": sid, "reason": "moderators"}, gone
            # a new viewer: the owner hears it, the former moderator does not
            await Client(v).ok("streams.watch", {"stream_id": sid})
            await O.wait(lambda x: x["type"] == "metrics.viewers" and x["data"]["viewers"] == 1)
            m2 = await M.call("analytics.watch", {"stream_id": sid})
            assert m2["type"] == "error" and m2["data"]["code"] == "forbidden", m2
            assert not [x for x in M.seen if x["type"] == "metrics.viewers"
                        and x["data"]["viewers"] == 1], M.seen
            problem(smod.call("GET", f"/api/v1/streams/{sid}/analytics"), 403, "forbidden")

    run(scenario())
    assert owner.call("POST", f"/api/v1/streams/{sid}/end").status == 200


def test_poll_votes_and_donations(srv):
    owner, fans = Account(srv, "vown"), [Account(srv, f"vfan{i}") for i in range(3)]
    sid = create(owner)
    r = owner.call("POST", f"/api/v1/streams/{sid}/polls",
                   {"title": "Best snack?", "choices": ["crisps", "nuts"], "duration_s": 600,
                    "allow_change": True})
    assert r.status == 201, r
    poll = r.json()["poll"]
    ids = [c["id"] for c in poll["choices"]]
    for i, f in enumerate(fans):
        r = f.call("POST", f"/api/v1/polls/{poll['id']}/vote", {"choices": [ids[i % 2]]})
        assert r.status == 200, r
    r = fans[0].call("POST", f"/api/v1/polls/{poll['id']}/vote", {"choices": [ids[1]]})
    assert r.status == 200 and r.json()["changed"] is True, r  # a change: not another vote
    for f, amount, cur in ((fans[0], 500, "USD"), (fans[1], 300, "EUR"), (fans[2], 250, "USD")):
        r = f.call("POST", f"/api/v1/streams/{sid}/donations", {"amount": amount, "currency": cur},
                   headers={"Idempotency-Key": os.urandom(8).hex()})
        assert r.status == 201, r
    t = wait_totals(owner, sid, lambda t: t["donations_count"] == 3 and t["poll_votes"] == 3)["totals"]
    assert t["donations"] == {"USD": {"count": 2, "sum": 750}, "EUR": {"count": 1, "sum": 300}}, t
    assert t["poll_votes"] == 3, t
    assert owner.call("POST", f"/api/v1/streams/{sid}/end").status == 200
    r = owner.call("GET", f"/api/v1/streams/{sid}/analytics?format=csv")
    rows = list(csv.DictReader(io.StringIO(r.body)))
    assert sum(int(x["donations_sum_USD"]) for x in rows) == 750, rows
    assert sum(int(x["donations_sum_EUR"]) for x in rows) == 300, rows
    assert sum(int(x["poll_votes"]) for x in rows) == 3, rows
