"""Polls plugin end to end against a real onaird with the streams and moderation plugins, on
both storage backends (sqlite and CongoDB for mongodb): the limits of a poll, who may start and
end one, one active poll per stream (also under concurrent creates), votes over REST and
WebSocket (anonymous 401, banned and timed-out users refused, verified-only, allow_change on
and off, concurrent votes of one user: exactly one counts), live results aggregated into a few
poll.updated frames that a second client receives with exact counts, the end by duration and
across a restart (a poll due while the server was down closes once on start), archive and
terminate, and the paged list of past polls."""
import asyncio
import base64
import json
import os
import threading
import time

import pytest
import websockets

from onair_harness import PLUGIN_DIR, Server, make_token
from store_support import Congo, storage_config, unique_db

BACKENDS = ["sqlite", "mongodb"]
PW = "correct horse battery staple"
API_KEY = "backend1"
API_SECRET = "api-secret-0123456789-abcdefghijklmnop"
WINDOW_MS = 500


def api_token(roles=("admin",), sub="backend-admin"):
    return make_token(sub=sub, roles=roles, secret=API_SECRET, iss=API_KEY)


def plugins():
    return {"streams": {"path": os.path.join(PLUGIN_DIR, "streams.so"),
                        "config": {"max_live_per_user": 10}},
            "moderation": {"path": os.path.join(PLUGIN_DIR, "moderation.so")},
            # min_duration_s: 1 so that a poll ends within a test (the default is 15)
            "polls": {"path": os.path.join(PLUGIN_DIR, "polls.so"),
                      "config": {"window_ms": WINDOW_MS, "min_duration_s": 1}}}


def core(backend, **limits):
    rl = {"polls.create": "100000/1m", "polls.vote": "100000/1m"}
    rl.update(limits)
    return {"auth": {"password_hash": "interactive", "api_keys": [f"{API_KEY}:{API_SECRET}"]},
            "storage": backend, "rate_limits": rl}


@pytest.fixture(scope="module")
def congo():
    c = Congo().start()
    yield c
    c.stop()


def backend_config(request, name):
    if name == "mongodb":
        return storage_config("mongodb", uri=request.getfixturevalue("congo").uri,
                              database=unique_db())
    return {"backend": "sqlite"}


@pytest.fixture(scope="module", params=BACKENDS)
def srv(request):
    s = Server(plugins=plugins(), core=core(backend_config(request, request.param))).start()
    s.backend = request.param
    yield s
    try:
        assert s.stop() == 0
    finally:
        s.kill()


@pytest.fixture(params=BACKENDS)
def backend(request):
    return backend_config(request, request.param)


# ---- helpers ---------------------------------------------------------------------------------
def claims(token):
    p = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


class Account:
    def __init__(self, srv, name, roles=None, verified=False):
        self.srv = srv
        self.username = name + base64.b32encode(os.urandom(5)).decode().lower()
        r = srv.http("POST", "/api/v1/auth/register",
                     {"username": self.username, "email": self.username + "@example.org",
                      "password": PW})
        assert r.status == 201, r
        self.token = r.json()["access_token"]
        self.id = claims(self.token)["sub"]
        change = {}
        if roles is not None:
            change["roles"] = list(roles)
        if verified:
            change["verified"] = True
        if change:
            r = srv.http("PATCH", f"/api/v1/admin/users/{self.id}", change, token=api_token())
            assert r.status == 200, r
            r = srv.http("POST", "/api/v1/auth/login",
                         {"username": self.username, "password": PW})
            assert r.status == 200, r
            self.token = r.json()["access_token"]

    def call(self, method, path, body=None, **kw):
        return self.srv.http(method, path, body, token=self.token, **kw)

    def headers(self):
        return {"Authorization": "Bearer " + self.token}


def problem(r, status, code, field=None):
    assert r.status == status, f"want {status} {code}, got {r!r}"
    body = r.json()
    assert r.header("Content-Type").startswith("application/problem+json"), r
    assert body["code"] == code, body
    assert body.get("detail"), body
    assert body.get("field") == field, body
    return body


def live_stream(owner):
    r = owner.call("POST", "/api/v1/streams", {"title": "Polls"})
    assert r.status == 201, r
    sid = r.json()["stream"]["id"]
    r = owner.call("POST", f"/api/v1/streams/{sid}/start")
    assert r.status == 200, r
    return sid


def poll_body(**kw):
    body = {"title": "Best snack?", "choices": ["crisps", "nuts", "fruit"], "duration_s": 600}
    body.update(kw)
    return body


def start_poll(acct, sid, **kw):
    r = acct.call("POST", f"/api/v1/streams/{sid}/polls", poll_body(**kw))
    assert r.status == 201, r
    return r.json()["poll"]


def vote(acct, pid, choices):
    return acct.call("POST", f"/api/v1/polls/{pid}/vote", {"choices": choices})


def get_poll(srv, pid, token=None):
    r = srv.http("GET", f"/api/v1/polls/{pid}", token=token)
    assert r.status == 200, r
    return r.json()["poll"]


def counts(poll):
    return {c["id"]: c["votes"] for c in poll["choices"]}


def end(acct, pid, status=None):
    return acct.call("POST", f"/api/v1/polls/{pid}/end", {"status": status} if status else None)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


async def ws_call(ws, type_, data):
    id_ = os.urandom(4).hex()
    await ws.send(json.dumps({"type": type_, "id": id_, "data": data}))
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if m.get("id") == id_:
            return m


async def ws_burst(ws, type_, datas):
    """Send every message at once, then collect the replies (in sending order)."""
    ids = [os.urandom(4).hex() for _ in datas]
    for id_, d in zip(ids, datas):
        await ws.send(json.dumps({"type": type_, "id": id_, "data": d}))
    got = {}
    while len(got) < len(ids):
        m = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if m.get("id") in ids:
            got[m["id"]] = m
    return [got[i] for i in ids]


async def frames_until(ws, pred, timeout=15):
    """Every frame received until (and with) the first that pred accepts."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"not received; saw {got[-5:]}"
        m = json.loads(await asyncio.wait_for(ws.recv(), left))
        got.append(m)
        if pred(m):
            return got


def in_parallel(fns):
    """Run the callables at the same moment on threads; their results in order."""
    out = [None] * len(fns)
    gate = threading.Barrier(len(fns))

    def go(i):
        gate.wait()
        out[i] = fns[i]()
    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


# ---- creating: limits, roles, one at a time ---------------------------------------------------
def test_limits_roles_and_one_active_poll(srv):
    owner, viewer, smod = Account(srv, "owner"), Account(srv, "viewer"), Account(srv, "smod")
    gmod = Account(srv, "gmod", roles=["viewer", "moderator"])
    sid = live_stream(owner)
    assert owner.call("PUT", f"/api/v1/streams/{sid}/moderators/{smod.id}").status == 200
    path = f"/api/v1/streams/{sid}/polls"
    problem(owner.call("POST", path, {"choices": ["a", "b"], "duration_s": 60}), 400,
            "missing_field", "title")
    problem(owner.call("POST", path, poll_body(title="x" * 61)), 400, "invalid_field", "title")
    problem(owner.call("POST", path, poll_body(title="   ")), 400, "invalid_field", "title")
    problem(owner.call("POST", path, poll_body(choices=["only"])), 400, "invalid_field",
            "choices")
    problem(owner.call("POST", path, poll_body(choices=list("abcdef"))), 400, "invalid_field",
            "choices")
    problem(owner.call("POST", path, poll_body(choices=["ok", "y" * 26])), 400, "invalid_field",
            "choices")
    problem(owner.call("POST", path, poll_body(choices=["same", "same"])), 400, "invalid_field",
            "choices")
    problem(owner.call("POST", path, poll_body(duration_s=0)), 400, "invalid_field", "duration_s")
    problem(owner.call("POST", path, poll_body(duration_s=1801)), 400, "invalid_field",
            "duration_s")
    problem(owner.call("POST", path, poll_body(duration_s="60")), 400, "invalid_field",
            "duration_s")
    problem(owner.call("POST", path, poll_body(multiple="yes")), 400, "invalid_field", "multiple")
    problem(owner.call("POST", path, poll_body(colour="red")), 400, "unknown_field", "colour")
    problem(srv.http("POST", path, poll_body()), 401, "unauthorized")
    problem(viewer.call("POST", path, poll_body()), 403, "forbidden")
    problem(owner.call("POST", f"/api/v1/streams/{'0' * 24}/polls", poll_body()), 404,
            "stream_not_found")
    r = owner.call("POST", "/api/v1/streams", {"title": "Not live"})
    problem(owner.call("POST", f"/api/v1/streams/{r.json()['stream']['id']}/polls", poll_body()),
            409, "not_live")

    # 2..5 choices of 1..25 characters, 1..60 title: the limits themselves are fine
    poll = start_poll(smod, sid, title="t" * 60, choices=["c" * 25, "d", "e", "f", "g"],
                      duration_s=1800)
    assert [c["id"] for c in poll["choices"]] == ["a", "b", "c", "d", "e"]
    assert poll["status"] == "active" and poll["ends_at"] - poll["started_at"] == 1800 * 1000
    problem(owner.call("POST", path, poll_body()), 409, "poll_active")
    r = srv.http("GET", f"{path}/active")
    assert r.status == 200 and r.json()["poll"]["id"] == poll["id"], r
    # a global moderator may end it; a viewer may not
    problem(end(viewer, poll["id"]), 403, "forbidden")
    problem(end(owner, poll["id"], "deleted"), 400, "invalid_field", "status")
    r = end(gmod, poll["id"])
    assert r.status == 200 and r.json()["poll"]["status"] == "terminated", r
    problem(end(owner, poll["id"]), 409, "poll_closed")
    r = srv.http("GET", f"{path}/active")
    assert r.status == 200 and r.json()["poll"] is None, r
    # the admin (API key) may start one now that the stream is free
    r = srv.http("POST", path, poll_body(), token=api_token())
    assert r.status == 201, r
    problem(srv.http("GET", f"/api/v1/polls/{'0' * 24}"), 404, "poll_not_found")
    problem(srv.http("GET", "/api/v1/polls/nope"), 404, "poll_not_found")


def test_concurrent_creates_leave_exactly_one_active(srv):
    owner = Account(srv, "cowner")
    sid = live_stream(owner)
    rs = in_parallel([lambda i=i: owner.call("POST", f"/api/v1/streams/{sid}/polls",
                                             poll_body(title=f"race {i}")) for i in range(12)])
    assert sorted(r.status for r in rs) == [201] + [409] * 11, rs
    for r in rs:
        if r.status == 409:
            assert r.json()["code"] == "poll_active", r
    winner = next(r.json()["poll"]["id"] for r in rs if r.status == 201)
    r = srv.http("GET", f"/api/v1/streams/{sid}/polls/active")
    assert r.json()["poll"]["id"] == winner, r


# ---- voting ---------------------------------------------------------------------------------
def test_vote_rules(srv):
    owner, bob, eve, tim = (Account(srv, n) for n in ("vowner", "bob", "eve", "tim"))
    sid = live_stream(owner)
    pid = start_poll(owner, sid)["id"]
    problem(srv.http("POST", f"/api/v1/polls/{pid}/vote", {"choices": ["a"]}), 401,
            "unauthorized")
    problem(vote(bob, pid, ["z"]), 400, "invalid_field", "choices")
    problem(vote(bob, pid, ["d"]), 400, "invalid_field", "choices")  # 3 choices: a, b, c
    problem(vote(bob, pid, ["a", "b"]), 400, "invalid_field", "choices")  # one per voter
    problem(vote(bob, pid, []), 400, "invalid_field", "choices")
    problem(vote(bob, pid, "a"), 400, "invalid_field", "choices")
    problem(bob.call("POST", f"/api/v1/polls/{pid}/vote", {}), 400, "missing_field", "choices")
    problem(bob.call("POST", f"/api/v1/polls/{pid}/vote", {"choices": ["a"], "x": 1}), 400,
            "unknown_field", "x")
    problem(vote(bob, "0" * 24, ["a"]), 404, "poll_not_found")

    # banned and timed-out users are refused by moderation (polls.vote chain)
    m = f"/api/v1/streams/{sid}/moderation"
    assert owner.call("POST", f"{m}/bans", {"user": eve.id, "reason": "spam"}).status == 201
    assert owner.call("POST", f"{m}/timeouts", {"user": tim.id, "duration_s": 600}).status == 201
    assert "banned" in problem(vote(eve, pid, ["a"]), 403, "denied")["detail"]
    assert "timed out" in problem(vote(tim, pid, ["a"]), 403, "denied")["detail"]

    r = vote(bob, pid, ["b"])
    assert r.status == 200 and r.json() == {"poll_id": pid, "choices": ["b"],
                                            "changed": False}, r
    problem(vote(bob, pid, ["a"]), 409, "already_voted")  # allow_change is off

    async def over_ws():
        async with websockets.connect(srv.ws_url) as anon, \
                websockets.connect(srv.ws_url, extra_headers=owner.headers()) as w:
            m = await ws_call(anon, "polls.vote", {"poll_id": pid, "choices": ["a"]})
            assert m["type"] == "error" and m["data"]["status"] == 401, m
            m = await ws_call(w, "polls.vote", {"poll_id": pid, "choices": ["q"]})
            assert m["type"] == "error" and m["data"]["code"] == "invalid_field", m
            assert m["data"]["field"] == "choices", m
            m = await ws_call(w, "polls.vote", {"poll_id": pid})
            assert m["type"] == "error" and m["data"]["code"] == "missing_field", m
            m = await ws_call(w, "polls.vote", {"poll_id": pid, "choices": ["c"]})
            assert m["type"] == "result" and m["data"]["choices"] == ["c"], m
            m = await ws_call(w, "polls.vote", {"poll_id": pid, "choices": ["c"]})
            assert m["type"] == "error" and m["data"]["code"] == "already_voted", m
    run(over_ws())
    poll = get_poll(srv, pid)
    assert counts(poll) == {"a": 0, "b": 1, "c": 1} and poll["voters"] == 2, poll
    assert [c["percent"] for c in poll["choices"]] == [0, 50, 50], poll

    # the end: later votes are refused, the results stay
    r = end(owner, pid)
    assert r.status == 200, r
    problem(vote(tim, pid, ["a"]), 409, "poll_closed")
    assert counts(get_poll(srv, pid)) == {"a": 0, "b": 1, "c": 1}


def test_verified_only_multiple_and_allow_change(srv):
    owner, plain = Account(srv, "mowner"), Account(srv, "plain")
    checked = Account(srv, "checked", verified=True)
    sid = live_stream(owner)
    pid = start_poll(owner, sid, multiple=True, allow_change=True, verified_only=True)["id"]
    problem(vote(plain, pid, ["a"]), 403, "verified_only")
    problem(vote(checked, pid, ["a", "a"]), 400, "invalid_field", "choices")
    r = vote(checked, pid, ["a", "c"])
    assert r.status == 200 and r.json()["changed"] is False, r
    assert counts(get_poll(srv, pid)) == {"a": 1, "b": 0, "c": 1}
    r = vote(checked, pid, ["b", "c"])  # changed: a out, b in
    assert r.status == 200 and r.json()["changed"] is True, r
    poll = get_poll(srv, pid)
    assert counts(poll) == {"a": 0, "b": 1, "c": 1} and poll["voters"] == 1, poll
    assert poll["total_votes"] == 2 and [c["percent"] for c in poll["choices"]] == [0, 100, 100]


@pytest.mark.parametrize("allow_change", [False, True])
def test_concurrent_votes_of_one_user_count_once(srv, allow_change):
    owner, bob = Account(srv, "rowner"), Account(srv, "rbob")
    sid = live_stream(owner)
    pid = start_poll(owner, sid, allow_change=allow_change)["id"]
    picks = ["a", "b", "c"] * 5
    rs = in_parallel([lambda c=c: vote(bob, pid, [c]) for c in picks])
    ok = [r for r in rs if r.status == 200]
    if allow_change:
        assert len(ok) == len(picks), rs  # each one a change of the same vote
    else:
        assert len(ok) == 1, rs
        for r in rs:
            if r.status != 200:
                assert r.status == 409 and r.json()["code"] == "already_voted", r
    poll = get_poll(srv, pid)
    assert poll["voters"] == 1 and sum(counts(poll).values()) == 1, poll
    if not allow_change:
        assert counts(poll)[ok[0].json()["choices"][0]] == 1, poll
    # over WebSocket at once, from two connections of the same user
    assert end(owner, pid).status == 200
    pid2 = start_poll(owner, sid, allow_change=allow_change)["id"]

    async def burst():
        async with websockets.connect(srv.ws_url, extra_headers=bob.headers()) as w1, \
                websockets.connect(srv.ws_url, extra_headers=bob.headers()) as w2:
            datas = [{"poll_id": pid2, "choices": [c]} for c in ("a", "b", "c")]
            both = await asyncio.gather(ws_burst(w1, "polls.vote", datas),
                                        ws_burst(w2, "polls.vote", datas))
            return both[0] + both[1]
    ms = run(burst())
    results = [m for m in ms if m["type"] == "result"]
    assert len(results) == (6 if allow_change else 1), ms
    poll = get_poll(srv, pid2)
    assert poll["voters"] == 1 and sum(counts(poll).values()) == 1, poll


def test_votes_are_rate_limited(server_factory, backend):
    s = server_factory(plugins=plugins(), core=core(backend, **{"polls.vote": "3/1m"})).start()
    owner, bob = Account(s, "lowner"), Account(s, "lbob")
    sid = live_stream(owner)
    pid = start_poll(owner, sid, allow_change=True)["id"]
    for c in ("a", "b", "c"):
        assert vote(bob, pid, [c]).status == 200
    body = problem(vote(bob, pid, ["a"]), 429, "rate_limited")
    assert body["retry_after_s"] >= 1, body

    async def ws():  # the same limit over WebSocket
        async with websockets.connect(s.ws_url, extra_headers=bob.headers()) as w:
            return await ws_call(w, "polls.vote", {"poll_id": pid, "choices": ["a"]})
    m = run(ws())
    assert m["type"] == "error" and m["data"]["code"] == "rate_limited", m
    assert m["data"]["status"] == 429 and m["data"]["retry_after_s"] >= 1, m
    assert vote(owner, pid, ["a"]).status == 200  # per user
    assert counts(get_poll(s, pid)) == {"a": 1, "b": 0, "c": 1}


# ---- live results ----------------------------------------------------------------------------
def test_aggregated_results_reach_a_second_client(srv):
    owner = Account(srv, "aowner")
    voters = [Account(srv, f"av{i}") for i in range(40)]
    sid = live_stream(owner)
    expected = {"a": 0, "b": 0, "c": 0}

    async def scenario():
        async with websockets.connect(srv.ws_url) as w1, websockets.connect(srv.ws_url) as w2:
            for w in (w1, w2):
                m = await ws_call(w, "streams.watch", {"stream_id": sid})
                assert m["type"] == "result", m
            poll = start_poll(owner, sid)
            pid = poll["id"]
            started = await frames_until(w1, lambda m: m["type"] == "poll.started")
            assert started[-1]["data"]["poll"]["id"] == pid
            t0 = time.monotonic()
            conns = [await websockets.connect(srv.ws_url, extra_headers=v.headers())
                     for v in voters]
            try:
                replies = await asyncio.gather(*(
                    ws_call(c, "polls.vote", {"poll_id": pid, "choices": ["abc"[i % 3]]})
                    for i, c in enumerate(conns)))
            finally:
                for c in conns:
                    await c.close()
            for i, m in enumerate(replies):
                assert m["type"] == "result", m
                expected["abc"[i % 3]] += 1

            def final(m):
                return (m["type"] == "poll.updated" and
                        m["data"]["poll"]["voters"] == len(voters))
            seen1 = await frames_until(w1, final)
            elapsed = time.monotonic() - t0
            seen2 = await frames_until(w2, final)
            updates = [m for m in seen1 if m["type"] == "poll.updated"]
            # aggregated: never a frame per vote, at most one per window (+ the edges)
            assert len(updates) <= elapsed / (WINDOW_MS / 1000) + 2, (len(updates), elapsed)
            assert len(updates) < len(voters) / 2, len(updates)  # never one per vote
            last = updates[-1]["data"]
            assert last["poll_id"] == pid and last["stream"] == sid, last
            assert counts(last["poll"]) == expected, last
            assert counts(seen2[-1]["data"]["poll"]) == expected
            # the end reaches the watchers with the final results
            r = end(owner, pid)
            assert r.status == 200, r
            ended = await frames_until(w2, lambda m: m["type"] == "poll.ended")
            assert counts(ended[-1]["data"]["poll"]) == expected
            assert ended[-1]["data"]["poll"]["status"] == "terminated"
            return pid
    pid = run(scenario())
    assert counts(get_poll(srv, pid)) == expected


# ---- the end ---------------------------------------------------------------------------------
def test_ends_by_itself_archive_and_past_polls(srv):
    owner, bob = Account(srv, "eowner"), Account(srv, "ebob")
    sid = live_stream(owner)

    async def timed():
        async with websockets.connect(srv.ws_url) as w:
            assert (await ws_call(w, "streams.watch", {"stream_id": sid}))["type"] == "result"
            pid = start_poll(owner, sid, duration_s=2)["id"]
            assert vote(bob, pid, ["a"]).status == 200
            got = await frames_until(w, lambda m: m["type"] == "poll.ended")
            poll = got[-1]["data"]["poll"]
            assert poll["id"] == pid and poll["status"] == "completed", poll
            assert counts(poll) == {"a": 1, "b": 0, "c": 0} and poll["ended_by"] is None
            return pid
    first = run(timed())
    problem(vote(owner, first, ["b"]), 409, "poll_closed")
    problem(end(owner, first), 409, "poll_closed")

    second = start_poll(owner, sid, title="second")["id"]
    assert vote(bob, second, ["c"]).status == 200
    r = end(owner, second, "archived")
    assert r.status == 200 and r.json()["poll"]["status"] == "archived", r
    problem(srv.http("GET", f"/api/v1/polls/{second}"), 404, "poll_not_found")  # hidden
    assert get_poll(srv, second, token=owner.token)["status"] == "archived"
    third = start_poll(owner, sid, title="third")["id"]
    assert end(owner, third).status == 200

    # past polls, newest first, with results, paged; the archived one only for the owner
    r = srv.http("GET", f"/api/v1/streams/{sid}/polls?limit=1")
    assert r.status == 200, r
    page = r.json()
    assert [p["id"] for p in page["polls"]] == [third] and page["next"], page
    r = srv.http("GET", f"/api/v1/streams/{sid}/polls?limit=1&after={page['next']}")
    assert [p["id"] for p in r.json()["polls"]] == [first], r
    assert counts(r.json()["polls"][0]) == {"a": 1, "b": 0, "c": 0}
    r = owner.call("GET", f"/api/v1/streams/{sid}/polls")
    assert [p["id"] for p in r.json()["polls"]] == [third, second, first], r
    problem(srv.http("GET", f"/api/v1/streams/{sid}/polls?limit=0"), 400, "invalid_query",
            "limit")
    problem(srv.http("GET", f"/api/v1/streams/{sid}/polls?after=zz"), 400, "invalid_query",
            "after")

    # deleting the stream deletes its polls (the bus event arrives just after the answer)
    assert owner.call("POST", f"/api/v1/streams/{sid}/end").status == 200
    r = owner.call("DELETE", f"/api/v1/streams/{sid}")
    assert r.status == 204, r
    deadline = time.time() + 5
    while time.time() < deadline:
        r = owner.call("GET", f"/api/v1/polls/{first}")  # stream_not_found until then
        if r.status == 404 and r.json()["code"] == "poll_not_found":
            break
        time.sleep(0.05)
    problem(r, 404, "poll_not_found")


def test_due_while_down_closes_once_on_start(server_factory, backend):
    s = server_factory(plugins=plugins(), core=core(backend)).start()
    owner, bob, amy = Account(s, "downer"), Account(s, "dbob"), Account(s, "damy")
    sid, other = live_stream(owner), live_stream(owner)
    pid = start_poll(owner, sid, duration_s=3)["id"]
    running = start_poll(owner, other, duration_s=600)["id"]  # outlives the restart
    assert vote(bob, pid, ["b"]).status == 200
    assert vote(bob, running, ["c"]).status == 200
    assert s.stop() == 0  # within its 3 s: it is still active in the store
    time.sleep(3.5)       # its time passes while the server is down
    s.start()
    assert s.wait_log(rf"poll {pid} completed", 10), s.log()
    poll = get_poll(s, pid)
    assert poll["status"] == "completed" and counts(poll) == {"a": 0, "b": 1, "c": 0}, poll
    assert poll["ended_at"] >= poll["ends_at"], poll
    # the other one is still on: recounted from its votes (nothing to repair), open to votes
    assert s.wait_log(r"2 active polls, 1 of them overdue", 10), s.log()
    assert "cannot recount" not in s.log() and "counters differ" not in s.log(), s.log()
    problem(vote(bob, running, ["a"]), 409, "already_voted")
    assert vote(amy, running, ["a"]).status == 200
    poll = get_poll(s, running)
    assert poll["status"] == "active" and counts(poll) == {"a": 1, "b": 0, "c": 1}, poll
    r = end(owner, running)
    assert r.status == 200 and r.json()["poll"]["status"] == "terminated", r
    assert s.stop() == 0
    s.start()  # a second start finds nothing to close
    time.sleep(1)
    assert not s.wait_log(rf"poll {pid} completed", 0.1), "closed again"
    assert get_poll(s, pid)["status"] == "completed"
