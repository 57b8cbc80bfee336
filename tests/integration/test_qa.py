"""Q&A plugin end to end against a real onaird with the streams plugin, on both storage
backends (sqlite and CongoDB for mongodb): asking (limits, UTF-8, rate limit), listing
(by votes / newest, status filter, paging, pinned first), votes (once per user, toggle
off), the authorization matrix for answer / pin / dismiss, one pinned question at a time,
live events on stream.<id>.qa over WebSocket, private streams, persistence across a
restart and WebSocket errors that keep the connection open."""
import asyncio
import base64
import json
import os
import time

import pytest
import websockets

from onair_harness import PLUGIN_DIR, Server, make_token
from store_support import Congo, storage_config, unique_db

BACKENDS = ["sqlite", "mongodb"]
PW = "correct horse battery staple"
API_KEY = "backend1"
API_SECRET = "api-secret-0123456789-abcdefghijklmnop"


def api_token(roles=("admin",), sub="backend-admin"):
    return make_token(sub=sub, roles=roles, secret=API_SECRET, iss=API_KEY)


def plugins():
    return {"streams": {"path": os.path.join(PLUGIN_DIR, "streams.so")},
            "qa": {"path": os.path.join(PLUGIN_DIR, "qa.so")}}


def core(backend, ask_limit="100000/1m"):
    c = {"auth": {"password_hash": "interactive", "api_keys": [f"{API_KEY}:{API_SECRET}"]},
         "storage": backend}
    if ask_limit:
        c["rate_limits"] = {"qa.ask": ask_limit}
    return c


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


# ---- helpers ---------------------------------------------------------------------------------
def claims(token):
    p = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


class Account:
    def __init__(self, srv, name, roles=None):
        self.srv = srv
        self.username = name + base64.b32encode(os.urandom(5)).decode().lower()
        r = srv.http("POST", "/api/v1/auth/register",
                     {"username": self.username, "email": self.username + "@example.org",
                      "password": PW})
        assert r.status == 201, r
        self.token = r.json()["access_token"]
        self.id = claims(self.token)["sub"]
        if roles is not None:
            r = srv.http("PATCH", f"/api/v1/admin/users/{self.id}", {"roles": list(roles)},
                         token=api_token())
            assert r.status == 200, r

    def call(self, method, path, body=None, **kw):
        return self.srv.http(method, path, body, token=self.token, **kw)


class Anon:
    def __init__(self, srv, token=None):
        self.srv, self.token = srv, token

    def call(self, method, path, body=None, **kw):
        return self.srv.http(method, path, body, token=self.token, **kw)


def problem(r, status, code):
    assert r.status == status, f"want {status} {code}, got {r!r}"
    assert (r.header("Content-Type") or "").startswith("application/problem+json"), r
    body = r.json()
    assert body["code"] == code, body
    assert body.get("detail"), body
    return body


def field_problem(r, code, field):
    """A body mistake: 400 missing_field / invalid_field / unknown_field naming the member."""
    body = problem(r, 400, code)
    assert body.get("field") == field, body
    return body


class Cast:
    """One stream with an owner, a stream moderator, a viewer, an anonymous caller and an
    admin (API-key token)."""

    def __init__(self, srv, **fields):
        self.srv = srv
        self.anon = Anon(srv)
        self.viewer = Account(srv, "viewer", roles=["viewer"])
        self.owner = Account(srv, "owner")
        self.smod = Account(srv, "smod")
        self.admin = Anon(srv, api_token())
        body = {"title": "Q&A stream"}
        body.update(fields)
        r = self.owner.call("POST", "/api/v1/streams", body)
        assert r.status == 201, r
        self.sid = r.json()["stream"]["id"]
        r = self.owner.call("PUT", f"/api/v1/streams/{self.sid}/moderators/{self.smod.id}")
        assert r.status == 200, r

    def q(self, tail=""):
        return f"/api/v1/streams/{self.sid}/questions{tail}"


def ask(acct, cast, text):
    r = acct.call("POST", cast.q(), {"text": text})
    assert r.status == 201, r
    return r.json()["question"]


# ---- asking ------------------------------------------------------------------------------------
def test_ask_and_get(srv):
    c = Cast(srv)
    q = ask(c.viewer, c, "  What is the plan for today?  ")
    assert q["text"] == "What is the plan for today?"  # trimmed
    assert q["author"] == c.viewer.id and q["author_name"] == c.viewer.username
    assert q["status"] == "open" and q["pinned"] is False and q["votes"] == 0
    assert q["stream"] == c.sid and len(q["id"]) == 24 and "voters" not in q
    assert q["created_at"] > 0 and q["answer_text"] is None and q["voted"] is False
    r = c.anon.call("GET", c.q("/" + q["id"]))
    assert r.status == 200 and r.json()["question"]["text"] == q["text"], r
    problem(c.anon.call("GET", c.q("/" + "0" * 24)), 404, "question_not_found")
    problem(c.anon.call("GET", c.q("/nope")), 404, "question_not_found")
    # limits: 300 characters (not bytes) is fine, 301 is not
    assert ask(c.viewer, c, "é" * 300)["text"] == "é" * 300
    # body mistakes name the member: the schema's (type, presence, unknown members) and the
    # plugin's own (length after trimming, control characters) alike
    assert ask(c.viewer, c, "  " + "x" * 300 + "\n")["text"] == "x" * 300  # trimmed first
    for text in ("", "   ", "x" * 301, "a\u0001b", 5, None, ["x"]):
        field_problem(c.viewer.call("POST", c.q(), {"text": text}), "invalid_field", "text")
    field_problem(c.viewer.call("POST", c.q(), {}), "missing_field", "text")
    field_problem(c.viewer.call("POST", c.q(), {"text": "ok", "extra": 1}), "unknown_field",
                  "extra")
    field_problem(c.viewer.call("POST", c.q(), {"Text": "misspelt"}), "unknown_field", "Text")
    problem(c.viewer.call("POST", c.q(), [{"text": "an array"}]), 400, "invalid_json")
    assert c.owner.call("GET", c.q("?status=all")).json()["questions"][0]["text"] == "x" * 300
    # invalid UTF-8 never reaches the plugin: the host refuses the JSON
    r = c.viewer.call("POST", c.q(), b'{"text": "bad \xff\xfe bytes"}',
                      headers={"Content-Type": "application/json"})
    problem(r, 400, "invalid_json")
    # who may ask: any signed-in user, on a stream that exists
    problem(c.anon.call("POST", c.q(), {"text": "hi"}), 401, "unauthorized")
    problem(c.viewer.call("POST", "/api/v1/streams/" + "0" * 24 + "/questions", {"text": "hi"}),
            404, "stream_not_found")
    problem(c.viewer.call("POST", "/api/v1/streams/zz/questions", {"text": "hi"}), 404,
            "stream_not_found")
    assert ask(c.admin, c, "From the backend")["author"] == "backend-admin"


def test_ask_rate_limit(server_factory):
    s = server_factory(plugins=plugins(), core=core({"backend": "sqlite"}, ask_limit=None))
    s.start()
    c = Cast(s)
    for i in range(5):
        ask(c.viewer, c, f"question {i}")
    r = c.viewer.call("POST", c.q(), {"text": "one too many"})
    body = problem(r, 429, "rate_limited")
    assert r.header("Retry-After") and body["retry_after_s"] >= 1, (r, body)
    ask(c.owner, c, "another user is not limited")


# ---- listing -------------------------------------------------------------------------------
def test_list_sort_filter_paging(srv):
    c = Cast(srv)
    voters = [Account(srv, f"v{i}") for i in range(3)]
    qs = [ask(c.viewer, c, f"Question {i}") for i in range(5)]
    # votes: q1 gets 3, q3 gets 2, q0 gets 1
    for q, n in ((qs[1], 3), (qs[3], 2), (qs[0], 1)):
        for v in voters[:n]:
            r = v.call("PUT", c.q(f"/{q['id']}/vote"))
            assert r.status == 200, r

    def ids(who, query=""):
        r = who.call("GET", c.q("?" + query))
        assert r.status == 200, r
        return [q["id"] for q in r.json()["questions"]]

    by_votes = [qs[1]["id"], qs[3]["id"], qs[0]["id"], qs[4]["id"], qs[2]["id"]]
    newest = [q["id"] for q in reversed(qs)]
    assert ids(c.anon) == by_votes  # default: by votes, open
    assert ids(c.anon, "sort=votes") == by_votes
    assert ids(c.anon, "sort=newest") == newest
    # the caller's own votes are marked
    r = voters[2].call("GET", c.q())
    assert [q["voted"] for q in r.json()["questions"]] == [True, False, False, False, False]
    # status filter
    assert c.owner.call("POST", c.q(f"/{qs[3]['id']}/answer"), {"text": "Yes"}).status == 200
    assert c.owner.call("POST", c.q(f"/{qs[4]['id']}/dismiss")).status == 200
    open_ = [i for i in by_votes if i not in (qs[3]["id"], qs[4]["id"])]
    assert ids(c.anon, "status=open") == open_
    assert ids(c.anon, "status=answered") == [qs[3]["id"]]
    assert ids(c.anon, "status=dismissed") == [qs[4]["id"]]
    assert ids(c.anon, "status=all") == by_votes
    # pinned first, whatever the sort
    assert c.smod.call("POST", c.q(f"/{qs[2]['id']}/pin")).status == 200
    assert ids(c.anon, "status=all")[0] == qs[2]["id"]
    assert ids(c.anon, "sort=newest&status=all")[0] == qs[2]["id"]
    want = ids(c.anon, "status=all&sort=votes")
    # paging: stable, no repeats, no gaps
    for sort in ("votes", "newest"):
        full = ids(c.anon, f"status=all&sort={sort}")
        seen, after = [], None
        while True:
            r = c.anon.call("GET", c.q(f"?status=all&sort={sort}&limit=2" +
                                       (f"&after={after}" if after else "")))
            assert r.status == 200, r
            page = r.json()
            assert len(page["questions"]) <= 2
            seen += [q["id"] for q in page["questions"]]
            after = page["next"]
            if not after:
                break
        assert seen == full, sort
    assert len(want) == 5
    for query in ("sort=best", "status=closed", "limit=0", "limit=101", "limit=x",
                  "after=notacursor"):
        problem(c.anon.call("GET", c.q("?" + query)), 400, "invalid_query")
    problem(c.anon.call("GET", "/api/v1/streams/" + "0" * 24 + "/questions"), 404,
            "stream_not_found")


# ---- votes ---------------------------------------------------------------------------------
def test_votes_once_per_user(srv):
    c = Cast(srv)
    q = ask(c.viewer, c, "Vote for me")
    path = c.q(f"/{q['id']}/vote")
    problem(c.anon.call("PUT", path), 401, "unauthorized")
    r = c.owner.call("PUT", path)
    assert r.status == 200 and r.json()["question"]["votes"] == 1, r
    assert r.json()["question"]["voted"] is True
    problem(c.owner.call("PUT", path), 409, "already_voted")
    r = c.smod.call("PUT", path)
    assert r.status == 200 and r.json()["question"]["votes"] == 2, r
    r = c.owner.call("DELETE", path)  # toggle off
    assert r.status == 200 and r.json()["question"]["votes"] == 1, r
    assert r.json()["question"]["voted"] is False
    problem(c.owner.call("DELETE", path), 409, "not_voted")
    r = c.owner.call("PUT", path)  # and on again
    assert r.status == 200 and r.json()["question"]["votes"] == 2, r
    assert c.anon.call("GET", c.q(f"/{q['id']}")).json()["question"]["votes"] == 2
    problem(c.owner.call("PUT", c.q("/" + "0" * 24 + "/vote")), 404, "question_not_found")
    problem(c.owner.call("DELETE", c.q("/" + "0" * 24 + "/vote")), 404, "question_not_found")
    # many voters at once: every vote counted exactly once
    voters = [Account(srv, f"cv{i}") for i in range(6)]
    q2 = ask(c.viewer, c, "Concurrent")

    async def burst():
        loop = asyncio.get_running_loop()
        calls = [loop.run_in_executor(None, v.call, "PUT", c.q(f"/{q2['id']}/vote"))
                 for v in voters for _ in range(2)]
        return await asyncio.gather(*calls)

    results = asyncio.run(burst())
    assert sorted(r.status for r in results) == [200] * 6 + [409] * 6, results
    assert c.anon.call("GET", c.q(f"/{q2['id']}")).json()["question"]["votes"] == 6
    # closed questions take no new votes
    assert c.owner.call("POST", c.q(f"/{q['id']}/dismiss")).status == 200
    problem(c.viewer.call("PUT", path), 409, "question_closed")


# ---- moderation ------------------------------------------------------------------------------
def test_moderation_matrix(srv):
    c = Cast(srv)
    other = Account(srv, "other")
    gmod = Account(srv, "gmod", roles=["moderator"])
    for action in ("answer", "pin", "unpin", "dismiss"):
        q = ask(c.viewer, c, f"To {action}")
        path = c.q(f"/{q['id']}/{action}")
        problem(c.anon.call("POST", path), 401, "unauthorized")
        problem(c.viewer.call("POST", path), 403, "forbidden")  # the author, even
        problem(other.call("POST", path), 403, "forbidden")
        for who in (c.owner, c.smod, c.admin, gmod):
            r = who.call("POST", path)
            assert r.status == 200, (action, who, r)
        problem(c.owner.call("POST", c.q("/" + "0" * 24 + f"/{action}")), 404,
                "question_not_found")
    q = ask(c.viewer, c, "Answer me")
    r = c.smod.call("POST", c.q(f"/{q['id']}/answer"), {"text": "  Here it is  "})
    assert r.status == 200, r
    a = r.json()["question"]
    assert a["status"] == "answered" and a["answer_text"] == "Here it is"
    assert a["answered_by"] == c.smod.id and a["answered_at"] > 0
    r = c.owner.call("POST", c.q(f"/{q['id']}/answer"))  # no text: fine
    assert r.status == 200 and r.json()["question"]["answer_text"] is None, r
    r = c.owner.call("POST", c.q(f"/{q['id']}/answer"), {"text": None})  # null: no text
    assert r.status == 200 and r.json()["question"]["answer_text"] is None, r
    # the optional body is checked when sent (nothing in it is required: no missing_field)
    answer = c.q(f"/{q['id']}/answer")
    for text in ("x" * 2001, "  \t ", 5, True):
        field_problem(c.owner.call("POST", answer, {"text": text}), "invalid_field", "text")
    field_problem(c.owner.call("POST", answer, {"text": "ok", "by": "me"}), "unknown_field",
                  "by")
    for raw in (b"not json", b"[1]", b'"text"'):
        problem(c.owner.call("POST", answer, raw, headers={"Content-Type": "application/json"}),
                400, "invalid_json")
    # a refused body changed nothing
    assert c.anon.call("GET", c.q(f"/{q['id']}")).json()["question"]["answer_text"] is None
    r = c.owner.call("POST", c.q(f"/{q['id']}/dismiss"))
    assert r.json()["question"]["status"] == "dismissed"
    problem(c.owner.call("POST", c.q(f"/{q['id']}/pin")), 409, "question_dismissed")


def test_one_pinned_at_a_time(srv):
    c = Cast(srv)
    a, b = ask(c.viewer, c, "First"), ask(c.viewer, c, "Second")
    assert c.owner.call("POST", c.q(f"/{a['id']}/pin")).json()["question"]["pinned"] is True
    r = c.smod.call("POST", c.q(f"/{b['id']}/pin"))
    assert r.status == 200 and r.json()["question"]["pinned"] is True, r
    qs = c.anon.call("GET", c.q("?status=all")).json()["questions"]
    assert [q["id"] for q in qs if q["pinned"]] == [b["id"]]
    assert qs[0]["id"] == b["id"]
    r = c.owner.call("POST", c.q(f"/{b['id']}/pin"))  # pinning again: still the only one
    assert r.status == 200
    r = c.owner.call("POST", c.q(f"/{b['id']}/unpin"))
    assert r.status == 200 and r.json()["question"]["pinned"] is False
    qs = c.anon.call("GET", c.q("?status=all")).json()["questions"]
    assert not any(q["pinned"] for q in qs)
    # dismissing the pinned question unpins it
    assert c.owner.call("POST", c.q(f"/{a['id']}/pin")).status == 200
    r = c.owner.call("POST", c.q(f"/{a['id']}/dismiss"))
    assert r.json()["question"]["pinned"] is False


# ---- private streams -------------------------------------------------------------------------
def test_private_stream_is_404(srv):
    c = Cast(srv, visibility="private")
    allowed = Account(srv, "allowed")
    r = c.owner.call("PATCH", f"/api/v1/streams/{c.sid}", {"allowed_viewers": [allowed.id]})
    assert r.status == 200, r
    q = ask(allowed, c, "Private question")
    for who in (c.anon, c.viewer):
        problem(who.call("GET", c.q()), 404, "stream_not_found")
        problem(who.call("GET", c.q(f"/{q['id']}")), 404, "stream_not_found")
    problem(c.viewer.call("POST", c.q(), {"text": "hi"}), 404, "stream_not_found")
    problem(c.viewer.call("PUT", c.q(f"/{q['id']}/vote")), 404, "stream_not_found")
    problem(c.viewer.call("POST", c.q(f"/{q['id']}/pin")), 404, "stream_not_found")
    for who in (c.owner, c.smod, c.admin, allowed):
        r = who.call("GET", c.q())
        assert r.status == 200 and [x["id"] for x in r.json()["questions"]] == [q["id"]], r
    # a question of another stream is not found through this one
    other = Cast(srv)
    problem(c.owner.call("GET", other.q(f"/{q['id']}")), 404, "question_not_found")
    problem(other.owner.call("POST", other.q(f"/{q['id']}/pin")), 404, "question_not_found")


# ---- WebSocket -------------------------------------------------------------------------------
def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


class Client:
    """One WebSocket client that keeps what it received while waiting for something else."""

    def __init__(self, ws):
        self.ws, self.seen = ws, []

    async def call(self, type_, data):
        id_ = os.urandom(4).hex()
        await self.ws.send(json.dumps({"type": type_, "id": id_, "data": data}))
        while True:
            m = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
            if m.get("id") == id_:
                return m
            self.seen.append(m)

    async def wait(self, pred, timeout=10):
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


def hdr(acct):
    return {"Authorization": "Bearer " + acct.token}


def test_websocket_live_updates_and_errors(srv):
    c = Cast(srv)
    secret = Cast(srv, visibility="private")
    topic = f"stream.{c.sid}.qa"

    async def scenario():
        async with websockets.connect(srv.ws_url, extra_headers=hdr(c.viewer)) as v, \
                websockets.connect(srv.ws_url) as w:
            V, W = Client(v), Client(w)
            r = await W.call("qa.watch", {"stream_id": c.sid})  # anonymous watcher
            assert r["type"] == "result" and r["data"]["watching"] == c.sid, r
            # errors answer the message and keep the connection open
            for type_, data, code in (
                    ("qa.watch", {"stream_id": secret.sid}, "stream_not_found"),
                    ("qa.ask", {"stream_id": secret.sid, "text": "hi"}, "stream_not_found"),
                    ("qa.vote", {"stream_id": c.sid, "question_id": "0" * 24},
                     "question_not_found")):
                r = await V.call(type_, data)
                assert r["type"] == "error" and r["data"]["code"] == code, (type_, data, r)
            # data mistakes: 400 with the code and the member, for every message type
            sid, qid = c.sid, "0" * 24
            for type_, data, code, field in (
                    ("qa.ask", {"text": "hi"}, "missing_field", "stream_id"),
                    ("qa.ask", {"stream_id": sid}, "missing_field", "text"),
                    ("qa.ask", {"stream_id": sid, "text": 5}, "invalid_field", "text"),
                    ("qa.ask", {"stream_id": sid, "text": ""}, "invalid_field", "text"),
                    ("qa.ask", {"stream_id": sid, "text": "x" * 301}, "invalid_field", "text"),
                    ("qa.ask", {"stream_id": "zz", "text": "hi"}, "invalid_field", "stream_id"),
                    ("qa.ask", {"stream_id": sid, "text": "hi", "to": "x"}, "unknown_field",
                     "to"),
                    ("qa.vote", {"stream_id": sid}, "missing_field", "question_id"),
                    ("qa.vote", {"stream_id": sid, "question_id": 7}, "invalid_field",
                     "question_id"),
                    ("qa.vote", {"stream_id": sid, "question_id": "zz"}, "invalid_field",
                     "question_id"),
                    ("qa.vote", {"stream_id": sid, "question_id": qid, "on": "yes"},
                     "invalid_field", "on"),
                    ("qa.vote", {"stream_id": sid, "question_id": qid, "up": True},
                     "unknown_field", "up"),
                    ("qa.watch", {}, "missing_field", "stream_id"),
                    ("qa.watch", {"stream_id": ["x"]}, "invalid_field", "stream_id"),
                    ("qa.watch", {"stream_id": "zz"}, "invalid_field", "stream_id"),
                    ("qa.watch", {"stream_id": sid, "all": True}, "unknown_field", "all"),
                    ("qa.unwatch", {}, "missing_field", "stream_id"),
                    ("qa.unwatch", {"stream_id": None}, "invalid_field", "stream_id"),
                    ("qa.unwatch", {"stream_id": sid, "x": 1}, "unknown_field", "x")):
                r = await V.call(type_, data)
                assert r["type"] == "error", (type_, data, r)
                assert r["data"]["code"] == code and r["data"]["status"] == 400, (type_, data, r)
                assert r["data"]["field"] == field and r["data"]["detail"], (type_, data, r)
            r = await W.call("qa.ask", {"stream_id": c.sid, "text": "anonymous?"})
            assert r["type"] == "error" and r["data"]["status"] == 401, r

            # ask over WebSocket: the watcher hears it
            r = await V.call("qa.ask", {"stream_id": c.sid, "text": "Live question"})
            assert r["type"] == "result", r
            qid = r["data"]["question"]["id"]
            m = await W.wait(lambda m: m["type"] == "qa.asked")
            assert m["topic"] == topic and m["data"]["question"]["id"] == qid
            assert m["data"]["question"]["text"] == "Live question"
            # a REST ask too
            q2 = ask(c.owner, c, "Another one")
            m = await W.wait(lambda m: m["type"] == "qa.asked")
            assert m["data"]["question"]["id"] == q2["id"]

            # votes: once, then already_voted, then off
            r = await V.call("qa.vote", {"stream_id": c.sid, "question_id": qid, "on": True})
            assert r["type"] == "result" and r["data"]["question"]["votes"] == 1, r
            m = await W.wait(lambda m: m["type"] == "qa.voted")
            assert m["data"] == {"stream": c.sid, "question": qid, "votes": 1}
            r = await V.call("qa.vote", {"stream_id": c.sid, "question_id": qid})
            assert r["type"] == "error" and r["data"]["code"] == "already_voted", r
            assert r["data"]["status"] == 409
            r = await V.call("qa.vote", {"stream_id": c.sid, "question_id": qid, "on": False})
            assert r["type"] == "result" and r["data"]["question"]["votes"] == 0, r
            m = await W.wait(lambda m: m["type"] == "qa.voted")
            assert m["data"]["votes"] == 0
            r = await V.call("qa.vote", {"stream_id": c.sid, "question_id": qid, "on": False})
            assert r["type"] == "error" and r["data"]["code"] == "not_voted", r

            # moderation events
            assert c.owner.call("POST", c.q(f"/{qid}/pin")).status == 200
            m = await W.wait(lambda m: m["type"] == "qa.pinned")
            assert m["data"]["question"]["id"] == qid and m["data"]["question"]["pinned"]
            assert c.smod.call("POST", c.q(f"/{q2['id']}/pin")).status == 200
            m = await W.wait(lambda m: m["type"] == "qa.unpinned")
            assert m["data"]["question"]["id"] == qid and not m["data"]["question"]["pinned"]
            m = await W.wait(lambda m: m["type"] == "qa.pinned")
            assert m["data"]["question"]["id"] == q2["id"]
            assert c.owner.call("POST", c.q(f"/{qid}/answer"), {"text": "Done"}).status == 200
            m = await W.wait(lambda m: m["type"] == "qa.answered")
            assert m["data"]["question"]["answer_text"] == "Done"
            assert c.owner.call("POST", c.q(f"/{q2['id']}/dismiss")).status == 200
            m = await W.wait(lambda m: m["type"] == "qa.dismissed")
            assert m["data"]["question"]["status"] == "dismissed"
            assert "voters" not in json.dumps(m)
            # unwatch: no more events
            r = await W.call("qa.unwatch", {"stream_id": c.sid})
            assert r["data"] == {"unwatched": True}, r
            # the sender's connection is still fine after all those errors
            r = await V.call("qa.watch", {"stream_id": c.sid})
            assert r["type"] == "result", r
            ask(c.owner, c, "After unwatch")
            await V.wait(lambda m: m["type"] == "qa.asked")
            W.seen.clear()
            await asyncio.sleep(0.3)
            assert not [m for m in W.seen if m["type"] == "qa.asked"]

    run(scenario())


# ---- access changes end Q&A subscriptions (issue 14, M1) --------------------------------------
def revoked(reason):
    return lambda m: m.get("type") == "streams.access_revoked" and m["data"]["reason"] == reason


def asked(text):
    return lambda m: m.get("type") == "qa.asked" and m["data"]["question"]["text"] == text


async def hears_nothing_more(cl, sid, pred):
    """cl's next reply comes after everything published before it: nothing matching pred may
    come first. Watching again is that request: refused, as the stream is gone for cl."""
    r = await cl.call("qa.watch", {"stream_id": sid})
    assert r["type"] == "error" and r["data"]["code"] == "stream_not_found", r
    assert not any(pred(m) for m in cl.seen), cl.seen


def test_revoked_access_ends_qa_subscriptions(srv):
    """Watchers of a public stream's questions: an anonymous connection, a signed-in stranger,
    two viewers who will be allowed and the stream moderator. Going private cuts off the
    anonymous and the stranger, taking a viewer off the allowed list cuts her off, removing the
    moderator cuts him off: each is told (streams.access_revoked), hears no question asked
    afterwards and cannot watch again; the remaining allowed viewer keeps hearing them."""
    c = Cast(srv)
    stranger, kept, dropped = (Account(srv, n) for n in ("str", "kept", "drop"))
    base = f"/api/v1/streams/{c.sid}"

    async def scenario():
        async with websockets.connect(srv.ws_url) as a, \
                websockets.connect(srv.ws_url, extra_headers=hdr(stranger)) as s, \
                websockets.connect(srv.ws_url, extra_headers=hdr(kept)) as k, \
                websockets.connect(srv.ws_url, extra_headers=hdr(dropped)) as d, \
                websockets.connect(srv.ws_url, extra_headers=hdr(c.smod)) as m:
            A, S, K, D, M = (Client(x) for x in (a, s, k, d, m))
            for cl in (A, S, K, D, M):
                r = await cl.call("qa.watch", {"stream_id": c.sid})
                assert r["type"] == "result", r
            ask(c.owner, c, "Public question")
            for cl in (A, S, K, D, M):
                await cl.wait(asked("Public question"))

            r = c.owner.call("PATCH", base, {"visibility": "private",
                                             "allowed_viewers": [kept.id, dropped.id]})
            assert r.status == 200, r
            for cl in (A, S):
                ev = await cl.wait(revoked("visibility"))
                assert ev["data"]["stream"] == c.sid, ev
            ask(c.owner, c, "Private question")
            for cl in (K, D, M):
                await cl.wait(asked("Private question"))
            for cl in (A, S):
                await hears_nothing_more(cl, c.sid, asked("Private question"))
            problem(stranger.call("GET", c.q()), 404, "stream_not_found")

            r = c.owner.call("PATCH", base, {"allowed_viewers": [kept.id]})
            assert r.status == 200, r
            await D.wait(revoked("allowed_viewers"))
            ask(kept, c, "Without her")
            for cl in (K, M):
                await cl.wait(asked("Without her"))
            await hears_nothing_more(D, c.sid, asked("Without her"))

            r = c.owner.call("DELETE", f"{base}/moderators/{c.smod.id}")
            assert r.status == 200, r
            await M.wait(revoked("moderators"))
            ask(kept, c, "Without him")
            await K.wait(asked("Without him"))
            await hears_nothing_more(M, c.sid, asked("Without him"))
            problem(c.smod.call("GET", c.q()), 404, "stream_not_found")
            assert not any(x["type"] == "streams.access_revoked" for x in K.seen), K.seen
            # unwatch still answers for the one who kept it
            r = await K.call("qa.unwatch", {"stream_id": c.sid})
            assert r["data"] == {"unwatched": True}, r

    run(scenario())


# ---- persistence -----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_questions_survive_restart(request, backend):
    storage = backend_config(request, backend)
    s = Server(plugins=plugins(), core=core(storage)).start()
    try:
        c = Cast(s)
        q = ask(c.viewer, c, "Still there?")
        assert c.owner.call("PUT", c.q(f"/{q['id']}/vote")).status == 200
        assert c.owner.call("POST", c.q(f"/{q['id']}/pin")).status == 200
        assert s.stop() == 0
        s.start()
        r = c.anon.call("GET", c.q())
        assert r.status == 200, r
        got = r.json()["questions"]
        assert [x["id"] for x in got] == [q["id"]]
        assert got[0]["votes"] == 1 and got[0]["pinned"] is True
        problem(c.owner.call("PUT", c.q(f"/{q['id']}/vote")), 409, "already_voted")
        # deleting the stream deletes its questions
        r = c.owner.call("DELETE", f"/api/v1/streams/{c.sid}")
        assert r.status == 204, r
        deadline = time.time() + 5
        while time.time() < deadline:
            r = c.admin.call("GET", c.q())
            if r.status == 404:
                break
            time.sleep(0.05)
        problem(r, 404, "stream_not_found")
        assert s.stop() == 0
    finally:
        s.kill()


def test_filters_on_the_qa_chains(server_factory):
    """Moderation (and any plugin) joins qa.ask and qa.vote: a deny or hold reaches the
    asker as 403 denied with the filter's reason, and nothing is stored or counted."""
    for chain in ("qa.ask", "qa.vote"):
        for verdict in ("deny", "hold"):
            p = plugins()
            p["hooktest"] = {"config": {"chain": chain, "filters": [f"10:{verdict}"]}}
            s = server_factory(plugins=p, core=core({"backend": "sqlite"})).start()
            c = Cast(s)
            if chain == "qa.ask":
                body = problem(c.viewer.call("POST", c.q(), {"text": "filtered?"}), 403,
                               "denied")
                assert "by" in body["detail"], body  # the filter's reason
                r = c.owner.call("GET", c.q("?status=all"))
                assert r.status == 200 and r.json()["questions"] == [], r
            else:
                qid = ask(c.viewer, c, "vote for me")["id"]
                problem(c.owner.call("PUT", c.q(f"/{qid}/vote")), 403, "denied")
                r = c.owner.call("GET", c.q(f"/{qid}"))
                assert r.status == 200 and r.json()["question"]["votes"] == 0, r
            s.stop()


def test_a_filter_rewrites_the_question(server_factory):
    """A filter on qa.ask may rewrite the text: the rewritten text is what is stored."""
    p = plugins()
    p["hooktest"] = {"config": {"chain": "qa.ask", "filters": ["10:shout"]}}
    s = server_factory(plugins=p, core=core({"backend": "sqlite"})).start()
    c = Cast(s)
    q = ask(c.viewer, c, "  why so quiet?  ")
    assert q["text"] == "WHY SO QUIET?", q
    r = c.anon.call("GET", c.q(f"/{q['id']}"))
    assert r.status == 200 and r.json()["question"]["text"] == "WHY SO QUIET?", r
    s.stop()


# ---- unlisted streams: the share token (issue 14, M3) -----------------------------------------
def test_unlisted_questions_need_the_share_token(srv):
    """An unlisted stream's questions are read, asked, voted on and watched with its share token
    only (REST ?share=, WebSocket "share"): its id alone, or another stream's token, is 404
    as for no stream at all. Its owner and moderators need none."""
    c = Cast(srv, visibility="unlisted")
    other = Cast(srv, visibility="unlisted")
    token = c.owner.call("GET", f"/api/v1/streams/{c.sid}").json()["stream"]["share_token"]
    foreign = other.owner.call("GET", f"/api/v1/streams/{other.sid}").json()["stream"][
        "share_token"]
    q = ask(c.owner, c, "Owner asks")  # staff need no token
    for tail in ("", f"?share={foreign}", "?share=sh_nope"):
        for who in (c.anon, c.viewer):
            problem(who.call("GET", c.q() + tail), 404, "stream_not_found")
            problem(who.call("GET", c.q(f"/{q['id']}") + tail), 404, "stream_not_found")
        problem(c.viewer.call("POST", c.q() + tail, {"text": "hi?"}), 404, "stream_not_found")
        problem(c.viewer.call("PUT", c.q(f"/{q['id']}/vote") + tail), 404, "stream_not_found")
    r = c.viewer.call("POST", c.q(f"?share={token}"), {"text": "With the link?"})
    assert r.status == 201, r
    assert c.viewer.call("PUT", c.q(f"/{q['id']}/vote?share={token}")).status == 200
    r = c.anon.call("GET", c.q(f"?share={token}"))
    assert len(r.json()["questions"]) == 2, r
    assert c.smod.call("POST", c.q(f"/{q['id']}/pin")).status == 200

    async def scenario():
        async with websockets.connect(srv.ws_url) as a, \
                websockets.connect(srv.ws_url, extra_headers=hdr(c.viewer)) as v:
            A, V = Client(a), Client(v)
            for data in ({"stream_id": c.sid}, {"stream_id": c.sid, "share": foreign}):
                r = await A.call("qa.watch", data)
                assert r["type"] == "error" and r["data"]["code"] == "stream_not_found", r
                r = await V.call("qa.ask", dict(data, text="hi?"))
                assert r["type"] == "error" and r["data"]["code"] == "stream_not_found", r
            r = await A.call("qa.watch", {"stream_id": c.sid, "share": token})
            assert r["type"] == "result", r
            r = await V.call("qa.ask", {"stream_id": c.sid, "share": token, "text": "Live?"})
            assert r["type"] == "result", r
            await A.wait(asked("Live?"))

    run(scenario())
