"""Moderation plugin end to end against a real onaird with the streams, reactions and qa
plugins, on both storage backends (sqlite and CongoDB for mongodb): stream bans and
timeouts enforced on reactions.send, qa.ask and qa.vote at the moment of the action
(unban and expiry allow again), platform bans by admins, the rights matrix, precise
errors (cannot_moderate_owner, invalid_pattern, user_not_found), body errors in the one
vocabulary (missing_field / invalid_field / unknown_field with `field`), blocked terms CRUD,
chat_unavailable without the chat plugin, and the audit log."""
import asyncio
import base64
import json
import os
import time
import urllib.parse

import pytest
import websockets

from onair_harness import PLUGIN_DIR, Server, make_token, request
from store_support import Congo, storage_config, unique_db

BACKENDS = ["sqlite", "mongodb"]
PW = "correct horse battery staple"
API_KEY = "backend1"
API_SECRET = "api-secret-0123456789-abcdefghijklmnop"


def api_token(roles=("admin",), sub="backend-admin"):
    return make_token(sub=sub, roles=roles, secret=API_SECRET, iss=API_KEY)


def plugins():
    return {"streams": {"path": os.path.join(PLUGIN_DIR, "streams.so"),
                        "config": {"max_live_per_user": 10}},
            "reactions": {"path": os.path.join(PLUGIN_DIR, "reactions.so")},
            "qa": {"path": os.path.join(PLUGIN_DIR, "qa.so")},
            "moderation": {"path": os.path.join(PLUGIN_DIR, "moderation.so")}}


def core(backend):
    return {"auth": {"password_hash": "interactive", "api_keys": [f"{API_KEY}:{API_SECRET}"]},
            "storage": backend, "rate_limits": {"qa.ask": "100000/1m"}}


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
            r = srv.http("POST", "/api/v1/auth/login",
                         {"username": self.username, "password": PW})
            assert r.status == 200, r
            self.token = r.json()["access_token"]

    def call(self, method, path, body=None, **kw):
        return self.srv.http(method, path, body, token=self.token, **kw)

    def headers(self):
        return {"Authorization": "Bearer " + self.token}


class Anon:
    def __init__(self, srv, token=None):
        self.srv, self.token = srv, token

    def call(self, method, path, body=None, **kw):
        return self.srv.http(method, path, body, token=self.token, **kw)


def problem(r, status, code, field=None):
    assert r.status == status, f"want {status} {code}, got {r!r}"
    body = r.json()
    assert body["code"] == code, body
    assert body.get("detail"), body
    assert body.get("field") == field, body
    return body


class Cast:
    """One live stream with an owner, a stream moderator, two viewers, an anonymous caller
    and an admin (API-key token)."""

    def __init__(self, srv):
        self.srv = srv
        self.anon = Anon(srv)
        self.viewer = Account(srv, "viewer")
        self.other = Account(srv, "other")
        self.owner = Account(srv, "owner")
        self.smod = Account(srv, "smod")
        self.admin = Anon(srv, api_token())
        r = self.owner.call("POST", "/api/v1/streams", {"title": "Moderated"})
        assert r.status == 201, r
        self.sid = r.json()["stream"]["id"]
        r = self.owner.call("POST", f"/api/v1/streams/{self.sid}/start")
        assert r.status == 200, r
        r = self.owner.call("PUT", f"/api/v1/streams/{self.sid}/moderators/{self.smod.id}")
        assert r.status == 200, r

    def m(self, tail=""):
        return f"/api/v1/streams/{self.sid}/moderation{tail}"

    def ask(self, acct, text="a question?"):
        return acct.call("POST", f"/api/v1/streams/{self.sid}/questions", {"text": text})


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def ws_call(ws, type_, data):
    id_ = os.urandom(4).hex()
    await ws.send(json.dumps({"type": type_, "id": id_, "data": data}))
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if m.get("id") == id_:
            return m


def react(srv, acct, sid):
    async def go():
        async with websockets.connect(srv.ws_url, extra_headers=acct.headers()) as w:
            return await ws_call(w, "reactions.send", {"stream_id": sid, "reaction": "heart"})
    return run(go())


def assert_denied(m, reason_part):
    assert m["type"] == "error", m
    assert m["data"]["code"] == "denied" and m["data"]["status"] == 403, m
    assert reason_part in m["data"]["detail"], m


def allowed(srv, acct, cast):
    """Can acct react, ask and vote on cast's stream? Returns the three outcomes."""
    r = react(srv, acct, cast.sid)
    reacted = r["type"] == "result"
    a = cast.ask(acct)
    asked = a.status == 201
    q = cast.ask(cast.owner, "owner question")
    assert q.status == 201, q
    qid = q.json()["question"]["id"]
    v = acct.call("PUT", f"/api/v1/streams/{cast.sid}/questions/{qid}/vote")
    voted = v.status == 200
    return reacted, asked, voted, r, a, v


# ---- enforcement -------------------------------------------------------------------------------
def test_ban_blocks_react_ask_vote_and_unban_allows(srv):
    c = Cast(srv)
    assert allowed(srv, c.viewer, c)[:3] == (True, True, True)
    r = c.smod.call("POST", c.m("/bans"), {"user": c.viewer.id, "reason": "spam"})
    assert r.status == 201, r
    s = r.json()["sanction"]
    assert s["kind"] == "ban" and s["user"] == c.viewer.id and s["reason"] == "spam", s
    assert s["stream"] == c.sid and s["by"] == c.smod.id and s["expires_at"] is None, s
    reacted, asked, voted, rr, a, v = allowed(srv, c.viewer, c)
    assert (reacted, asked, voted) == (False, False, False)
    assert_denied(rr, "you are banned from this stream")
    assert a.status == 403 and a.json()["code"] == "denied", a
    assert "you are banned from this stream" in a.json()["detail"], a.json()
    assert v.status == 403, v
    # other viewers and other streams are unaffected
    assert allowed(srv, c.other, c)[:3] == (True, True, True)
    c2 = Cast(srv)
    assert react(srv, c.viewer, c2.sid)["type"] == "result"
    r = c.owner.call("GET", c.m("/sanctions"))
    assert r.status == 200 and [x["user"] for x in r.json()["sanctions"]] == [c.viewer.id], r
    r = c.owner.call("DELETE", c.m(f"/bans/{c.viewer.id}"))
    assert r.status == 200, r
    assert allowed(srv, c.viewer, c)[:3] == (True, True, True)
    problem(c.owner.call("DELETE", c.m(f"/bans/{c.viewer.id}")), 404, "not_banned")


def test_timeout_and_expiry(srv):
    c = Cast(srv)
    r = c.owner.call("POST", c.m("/timeouts"), {"user": c.viewer.id, "duration_s": 2})
    assert r.status == 201, r
    s = r.json()["sanction"]
    assert s["kind"] == "timeout" and s["expires_at"] > time.time() * 1000, s
    rr = react(srv, c.viewer, c.sid)
    assert_denied(rr, "you are timed out for")
    assert "more seconds" in rr["data"]["detail"], rr
    a = c.ask(c.viewer)
    assert a.status == 403 and "timed out" in a.json()["detail"], a
    deadline = time.time() + 10
    while c.ask(c.viewer).status != 201:
        assert time.time() < deadline, "the timeout did not expire"
        time.sleep(0.2)
    assert react(srv, c.viewer, c.sid)["type"] == "result"
    # expired timeouts are not listed
    r = c.owner.call("GET", c.m("/sanctions"))
    assert r.status == 200 and r.json()["sanctions"] == [], r
    # lifting a timeout early
    r = c.owner.call("POST", c.m("/timeouts"), {"user": c.viewer.id, "duration_s": 600,
                                                "reason": "cool down"})
    assert r.status == 201, r
    assert c.ask(c.viewer).status == 403
    r = c.smod.call("DELETE", c.m(f"/timeouts/{c.viewer.id}"))
    assert r.status == 200, r
    assert c.ask(c.viewer).status == 201
    problem(c.smod.call("DELETE", c.m(f"/timeouts/{c.viewer.id}")), 404, "not_timed_out")


def test_platform_ban(srv):
    c = Cast(srv)
    c2 = Cast(srv)
    problem(c.owner.call("POST", "/api/v1/moderation/bans", {"user": c.viewer.id}), 403,
            "forbidden")
    problem(c.anon.call("POST", "/api/v1/moderation/bans", {"user": c.viewer.id}), 401,
            "unauthorized")
    r = c.admin.call("POST", "/api/v1/moderation/bans", {"user": c.viewer.id, "reason": "abuse"})
    assert r.status == 201, r
    assert r.json()["sanction"]["stream"] is None, r.json()
    for cast in (c, c2):
        assert_denied(react(srv, c.viewer, cast.sid), "you are banned from the platform")
        assert cast.ask(c.viewer).status == 403
    r = c.admin.call("GET", "/api/v1/moderation/bans")
    assert r.status == 200 and c.viewer.id in [x["user"] for x in r.json()["sanctions"]], r
    problem(c.admin.call("POST", "/api/v1/moderation/bans", {"user": "0" * 24}), 404,
            "user_not_found")
    problem(c.admin.call("POST", "/api/v1/moderation/bans", {"user": "nosuchuser"}), 400,
            "invalid_field", "user")
    r = c.admin.call("DELETE", f"/api/v1/moderation/bans/{c.viewer.id}")
    assert r.status == 200, r
    assert c2.ask(c.viewer).status == 201
    problem(c.admin.call("DELETE", f"/api/v1/moderation/bans/{c.viewer.id}"), 404, "not_banned")
    r = c.admin.call("GET", "/api/v1/moderation/log")
    assert r.status == 200, r
    actions = [(e["action"], e["target"]) for e in r.json()["entries"]]
    assert ("platform_ban", c.viewer.id) in actions and ("platform_unban", c.viewer.id) in actions


# ---- rights and errors -------------------------------------------------------------------------
def test_rights_matrix_and_errors(srv):
    c = Cast(srv)
    body = {"user": c.other.id, "reason": "x"}
    problem(c.anon.call("POST", c.m("/bans"), body), 401, "unauthorized")
    problem(c.viewer.call("POST", c.m("/bans"), body), 403, "forbidden")
    problem(c.viewer.call("GET", c.m("/sanctions")), 403, "forbidden")
    problem(c.viewer.call("GET", c.m("/log")), 403, "forbidden")
    problem(c.viewer.call("POST", c.m("/terms"), {"pattern": "spam"}), 403, "forbidden")
    for who in (c.owner, c.smod, c.admin):
        r = who.call("POST", c.m("/bans"), body)
        assert r.status == 201, (who, r)
        r = who.call("DELETE", c.m(f"/bans/{c.other.id}"))
        assert r.status == 200, (who, r)
    # the owner can never be sanctioned
    for who in (c.smod, c.admin):
        problem(who.call("POST", c.m("/bans"), {"user": c.owner.id}), 400,
                "cannot_moderate_owner", "user")
        problem(who.call("POST", c.m("/timeouts"), {"user": c.owner.id, "duration_s": 60}), 400,
                "cannot_moderate_owner", "user")
    # a moderator cannot sanction another moderator; the owner can
    smod2 = Account(srv, "smod2")
    assert c.owner.call("PUT", f"/api/v1/streams/{c.sid}/moderators/{smod2.id}").status == 200
    problem(c.smod.call("POST", c.m("/bans"), {"user": smod2.id}), 403, "forbidden")
    r = c.owner.call("POST", c.m("/timeouts"), {"user": smod2.id, "duration_s": 60})
    assert r.status == 201, r
    assert c.ask(smod2).status == 403  # moderators are not exempt from timeouts
    problem(c.owner.call("POST", c.m("/bans"), {"user": c.owner.id}), 400, "cannot_moderate_self",
            "user")
    # input errors: the member is named in `field`
    for d in (0, 1209601, "60", 1.5, None):
        problem(c.owner.call("POST", c.m("/timeouts"), {"user": c.viewer.id, "duration_s": d}),
                400, "invalid_field", "duration_s")
    for reason in ("x" * 501, "tab\tis fine but not \u0007", 5):
        problem(c.owner.call("POST", c.m("/timeouts"),
                             {"user": c.viewer.id, "duration_s": 60, "reason": reason}), 400,
                "invalid_field", "reason")
    r = c.owner.call("POST", c.m("/timeouts"),
                     {"user": c.viewer.id, "duration_s": 1209600, "reason": "y" * 500})
    assert r.status == 201, r
    r = c.owner.call("POST", c.m("/bans"), {"user": c.viewer.id, "reason": "  \t "})
    assert r.status == 201 and r.json()["sanction"]["reason"] is None, r  # blank: no reason
    r = c.owner.call("POST", c.m("/bans"), {"user": c.viewer.id, "reason": " line\nbreak "})
    assert r.status == 201 and r.json()["sanction"]["reason"] == "line\nbreak", r
    problem(c.owner.call("POST", c.m("/bans"), {"user": "0" * 24}), 404, "user_not_found")
    problem(c.owner.call("POST", c.m("/bans"), {"user": "nosuchuser"}), 400, "invalid_field",
            "user")
    problem(c.owner.call("POST", c.m("/bans"), {"user": c.viewer.id, "extra": 1}), 400,
            "unknown_field", "extra")
    problem(c.owner.call("POST", "/api/v1/streams/000000000000000000000000/moderation/bans",
                         {"user": c.viewer.id}), 404, "stream_not_found")


def test_body_errors_name_the_field(srv):
    """Every route with a body answers a missing, mistyped or unknown member with missing_field /
    invalid_field / unknown_field and the member in `field`, before anything is checked or
    stored (no audit entry)."""
    c = Cast(srv)
    u = c.viewer.id
    cases = (  # (who, path, body, code, field)
        (c.owner, c.m("/timeouts"), {"duration_s": 60}, "missing_field", "user"),
        (c.owner, c.m("/timeouts"), {"user": u}, "missing_field", "duration_s"),
        (c.owner, c.m("/timeouts"), {"user": 5, "duration_s": 60}, "invalid_field", "user"),
        (c.owner, c.m("/timeouts"), {"user": u, "duration_s": True}, "invalid_field",
         "duration_s"),
        (c.owner, c.m("/timeouts"), {"user": u, "duration_s": 60, "why": "x"}, "unknown_field",
         "why"),
        (c.owner, c.m("/bans"), {}, "missing_field", "user"),
        (c.owner, c.m("/bans"), {"user": u, "reason": ["spam"]}, "invalid_field", "reason"),
        (c.owner, c.m("/bans"), {"user": u, "duration_s": 60}, "unknown_field", "duration_s"),
        (c.owner, c.m("/terms"), {"action": "hold"}, "missing_field", "pattern"),
        (c.owner, c.m("/terms"), {"pattern": None}, "invalid_field", "pattern"),
        (c.owner, c.m("/terms"), {"pattern": "spam", "stream": c.sid}, "unknown_field",
         "stream"),
        (c.admin, "/api/v1/moderation/bans", {"reason": "x"}, "missing_field", "user"),
        (c.admin, "/api/v1/moderation/bans", {"user": u.upper()}, "invalid_field", "user"),
        (c.admin, "/api/v1/moderation/bans", {"user": u, "stream": None}, "unknown_field",
         "stream"),
    )
    for who, path, body, code, field in cases:
        b = problem(who.call("POST", path, body), 400, code, field)
        assert b["type"] == "urn:onair:problem:" + code, b
    r = c.owner.call("GET", c.m("/log"))
    assert [e["action"] for e in r.json()["entries"]] == ["moderator_added"], r
    r = c.owner.call("GET", c.m("/sanctions"))
    assert r.json()["sanctions"] == [], r
    r = c.owner.call("GET", c.m("/terms"))
    assert r.json()["terms"] == [], r


# ---- blocked terms -----------------------------------------------------------------------------
def test_terms_crud_and_invalid_patterns(srv):
    c = Cast(srv)
    # the pattern's own rules: invalid_pattern with a precise detail
    for bad in ("a", "*", "**", "***", "*a*", "a*", "b*d", "*", "", " ", " a ", "sp\u0001am"):
        problem(c.owner.call("POST", c.m("/terms"), {"pattern": bad}), 400, "invalid_pattern",
                "pattern")
    for bad, why in (("*", "only wildcards"), ("***", "only wildcards"), ("b*d", "start or the end"),
                     ("*a*", "besides the wildcards"), ("a", "2..500"),
                     ("a\u0007b", "control characters")):
        d = problem(c.owner.call("POST", c.m("/terms"), {"pattern": bad}), 400, "invalid_pattern",
                    "pattern")
        assert why in d["detail"], (bad, d)
    # what the body schema says: type, length, choices
    for body, field in (({"pattern": 5}, "pattern"), ({"pattern": "x" * 501}, "pattern"),
                        ({"pattern": "spam", "action": "ban"}, "action"),
                        ({"pattern": "spam", "action": 1}, "action")):
        problem(c.owner.call("POST", c.m("/terms"), body), 400, "invalid_field", field)
    r = c.owner.call("POST", c.m("/terms"), {"pattern": "x" * 500, "action": None})
    assert r.status == 201 and r.json()["term"]["action"] == "deny", r  # null: the default
    assert c.owner.call("DELETE", c.m(f"/terms/{r.json()['term']['id']}")).status == 200
    r = c.owner.call("POST", c.m("/terms"), {"pattern": "SpAm*"})
    assert r.status == 201, r
    t = r.json()["term"]
    assert t["pattern"] == "spam*" and t["action"] == "deny" and t["stream"] == c.sid, t
    r = c.smod.call("POST", c.m("/terms"), {"pattern": "*scam*", "action": "hold"})
    assert r.status == 201, r
    problem(c.owner.call("POST", c.m("/terms"), {"pattern": "spam*"}), 409, "term_exists")
    r = c.smod.call("GET", c.m("/terms"))
    assert r.status == 200, r
    assert [(x["pattern"], x["action"]) for x in r.json()["terms"]] == [("spam*", "deny"),
                                                                      ("*scam*", "hold")]
    r = c.owner.call("DELETE", c.m(f"/terms/{t['id']}"))
    assert r.status == 200, r
    problem(c.owner.call("DELETE", c.m(f"/terms/{t['id']}")), 404, "term_not_found")
    r = c.owner.call("GET", c.m("/terms"))
    assert [x["pattern"] for x in r.json()["terms"]] == ["*scam*"], r


def test_chat_actions_without_chat_plugin(srv):
    c = Cast(srv)
    mid = "0123456789abcdef01234567"
    problem(c.owner.call("DELETE", f"/api/v1/streams/{c.sid}/chat/messages/{mid}"), 503,
            "chat_unavailable")
    problem(c.owner.call("POST", c.m(f"/held/{mid}/approve")), 503, "chat_unavailable")
    problem(c.smod.call("POST", c.m(f"/held/{mid}/deny")), 503, "chat_unavailable")
    problem(c.viewer.call("POST", c.m(f"/held/{mid}/deny")), 403, "forbidden")


# ---- audit log ---------------------------------------------------------------------------------
def test_audit_log(srv):
    c = Cast(srv)
    assert c.smod.call("POST", c.m("/timeouts"),
                       {"user": c.viewer.id, "duration_s": 30, "reason": "calm"}).status == 201
    assert c.owner.call("POST", c.m("/bans"), {"user": c.other.id}).status == 201
    assert c.owner.call("DELETE", c.m(f"/bans/{c.other.id}")).status == 200
    assert c.owner.call("POST", c.m("/terms"), {"pattern": "*bad*"}).status == 201
    r = c.owner.call("GET", c.m("/log"))
    assert r.status == 200, r
    entries = r.json()["entries"]
    got = [(e["action"], e["actor"], e["target"]) for e in entries]
    # newest first; the oldest entry is the owner adding the stream moderator (Cast)
    assert got == [("term_add", c.owner.id, "*bad*"), ("unban", c.owner.id, c.other.id),
                   ("ban", c.owner.id, c.other.id), ("timeout", c.smod.id, c.viewer.id),
                   ("moderator_added", c.owner.id, c.smod.id)], got
    t = entries[-2]
    assert t["reason"] == "calm" and t["details"] == {"duration_s": 30}, t
    assert t["stream"] == c.sid and isinstance(t["at"], int) and t["id"], t
    # paging
    r = c.owner.call("GET", c.m("/log?limit=3"))
    page = r.json()
    assert len(page["entries"]) == 3 and page["next"], page
    r = c.owner.call("GET", c.m("/log?limit=3&after=" + urllib.parse.quote(page["next"], safe="")))
    assert r.status == 200 and [e["action"] for e in r.json()["entries"]] == \
        ["timeout", "moderator_added"], r
    problem(c.owner.call("GET", c.m("/log?limit=0")), 400, "invalid_query")
    problem(c.viewer.call("GET", c.m("/log")), 403, "forbidden")


# ---- with the chat plugin ----------------------------------------------------------------------
CHAT_SO = os.path.join(PLUGIN_DIR, "chat.so")


def test_chat_terms_held_queue_and_delete(server_factory):
    p = plugins()
    p["chat"] = {"path": CHAT_SO}
    s = server_factory(plugins=p, core=core({"backend": "sqlite"})).start()
    c = Cast(s)
    chat = f"/api/v1/streams/{c.sid}/chat"

    def say(acct, text):
        return acct.call("POST", chat, {"text": text})

    assert say(c.viewer, "hello spam world").status == 201  # no terms yet
    assert c.owner.call("POST", c.m("/terms"), {"pattern": "spam*"}).status == 201
    assert c.owner.call("POST", c.m("/terms"), {"pattern": "*scam*", "action": "hold"}).status == 201
    assert c.owner.call("POST", c.m("/terms"), {"pattern": "bad"}).status == 201
    # the very next message is checked
    r = say(c.viewer, "buy SPAMcoins now")
    assert r.status == 403 and r.json()["code"] == "denied", r
    assert "blocked term" in r.json()["detail"], r.json()
    assert say(c.viewer, "nospam").status == 201       # spam* = a word starting with spam
    assert say(c.viewer, "a badge").status == 201      # bad = whole word only
    assert say(c.viewer, "so BAD!").status == 403
    assert say(c.owner, "spam is fine for me").status == 201  # owner and moderators exempt
    assert say(c.smod, "so bad").status == 201
    r = say(c.viewer, "this is a Scammer link")
    assert r.status == 202 and r.json()["held"] is True, r
    held = r.json()["id"]
    r = say(c.viewer, "another scam")
    assert r.status == 202, r
    held2 = r.json()["id"]

    async def scenario():
        async with websockets.connect(s.ws_url) as w:
            r = await ws_call(w, "chat.join", {"stream_id": c.sid})
            assert r["type"] == "result", r
            seen = []

            async def wait(pred):
                for m in seen:
                    if pred(m):
                        return m
                while True:
                    m = json.loads(await asyncio.wait_for(w.recv(), 10))
                    if pred(m):
                        return m
                    seen.append(m)

            r = await asyncio.to_thread(c.smod.call, "POST", c.m(f"/held/{held}/approve"))
            assert r.status == 200, r
            m = await wait(lambda m: m["type"] == "chat.message" and m["data"]["id"] == held)
            assert "Scammer" in m["data"]["text"], m
            r = await asyncio.to_thread(c.owner.call, "DELETE", f"{chat}/messages/{held}")
            assert r.status == 200, r
            m = await wait(lambda m: m["type"] == "chat.deleted")
            assert m["data"]["id"] == held, m
    run(scenario())
    problem(c.owner.call("POST", c.m(f"/held/{held}/approve")), 409, "not_held")
    problem(c.owner.call("DELETE", f"{chat}/messages/{held}"), 404, "message_not_found")
    assert c.owner.call("POST", c.m(f"/held/{held2}/deny")).status == 200
    problem(c.owner.call("POST", c.m(f"/held/{held2}/approve")), 409, "not_held")
    problem(c.viewer.call("POST", c.m(f"/held/{held2}/approve")), 403, "forbidden")
    problem(c.owner.call("POST", c.m("/held/0123456789abcdef01234567/approve")), 404,
            "message_not_found")
    # a message of another stream is not found through this stream
    c2 = Cast(s)
    r = c2.viewer.call("POST", f"/api/v1/streams/{c2.sid}/chat", {"text": "hi"})
    assert r.status == 201, r
    problem(c.owner.call("DELETE", f"{chat}/messages/{r.json()['message']['id']}"), 404,
            "message_not_found")
    # bans and timeouts apply to chat at once
    assert c.owner.call("POST", c.m("/bans"), {"user": c.viewer.id}).status == 201
    r = say(c.viewer, "hello")
    assert r.status == 403 and "banned from this stream" in r.json()["detail"], r
    assert c.owner.call("DELETE", c.m(f"/bans/{c.viewer.id}")).status == 200
    assert say(c.viewer, "hello again").status == 201
    assert c.smod.call("POST", c.m("/timeouts"), {"user": c.viewer.id, "duration_s": 60}).status == 201
    r = say(c.viewer, "hello")
    assert r.status == 403 and "timed out" in r.json()["detail"], r
    r = c.owner.call("GET", c.m("/log"))
    actions = [e["action"] for e in r.json()["entries"]]
    for a in ("held_approve", "held_deny", "message_delete", "term_add"):
        assert a in actions, actions
    e = next(e for e in r.json()["entries"] if e["action"] == "held_approve")
    assert e["target"] == c.viewer.id and e["details"] == {"message": held}, e


def test_held_queue_listing(server_factory):
    p = plugins()
    p["chat"] = {"path": CHAT_SO}
    s = server_factory(plugins=p, core=core({"backend": "sqlite"})).start()
    c = Cast(s)
    chat = f"/api/v1/streams/{c.sid}/chat"
    assert c.owner.call("POST", c.m("/terms"), {"pattern": "*scam*", "action": "hold"}).status == 201
    r = c.owner.call("GET", c.m("/held"))
    assert r.status == 200 and r.json() == {"messages": [], "next": None}, r
    ids = []
    for text in ("a scam one", "scam two", "scam three"):
        r = c.viewer.call("POST", chat, {"text": text})
        assert r.status == 202, r
        ids.append(r.json()["id"])
    assert c.viewer.call("POST", chat, {"text": "visible"}).status == 201
    r = c.smod.call("GET", c.m("/held"))
    assert r.status == 200, r
    msgs = r.json()["messages"]
    assert [m["id"] for m in msgs] == ids, msgs  # oldest first
    assert msgs[0]["status"] == "held" and msgs[0]["text"] == "a scam one", msgs
    assert msgs[0]["user"] == c.viewer.id and msgs[0]["held_reason"], msgs
    # paged
    r = c.owner.call("GET", c.m("/held?limit=2"))
    assert [m["id"] for m in r.json()["messages"]] == ids[:2] and r.json()["next"], r.json()
    r = c.owner.call("GET", c.m(f"/held?limit=2&after={r.json()['next']}"))
    assert [m["id"] for m in r.json()["messages"]] == ids[2:], r.json()
    # approve and deny take messages out of the queue
    assert c.owner.call("POST", c.m(f"/held/{ids[0]}/approve")).status == 200
    assert c.owner.call("POST", c.m(f"/held/{ids[1]}/deny")).status == 200
    r = c.owner.call("GET", c.m("/held"))
    assert [m["id"] for m in r.json()["messages"]] == ids[2:], r.json()
    # same rights as approve / deny; bad queries
    problem(c.viewer.call("GET", c.m("/held")), 403, "forbidden")
    problem(c.owner.call("GET", c.m("/held?limit=101")), 400, "invalid_query")
    problem(c.owner.call("GET", c.m("/held?limit=0")), 400, "invalid_query")


def test_held_queue_without_chat_plugin(srv):
    c = Cast(srv)
    problem(c.owner.call("GET", c.m("/held")), 503, "chat_unavailable")


def test_ban_ends_private_stream_watch(srv):
    c = Cast(srv)
    base = f"/api/v1/streams/{c.sid}"
    r = c.owner.call("PATCH", base, {"visibility": "private",
                                      "allowed_viewers": [c.viewer.id, c.other.id]})
    assert r.status == 200, r

    async def scenario():
        async with websockets.connect(srv.ws_url, extra_headers=c.viewer.headers()) as v, \
                websockets.connect(srv.ws_url, extra_headers=c.other.headers()) as o:
            for w in (v, o):
                r = await ws_call(w, "streams.watch", {"stream_id": c.sid})
                assert r["type"] == "result", r
            r = await asyncio.to_thread(c.smod.call, "POST", c.m("/bans"), {"user": c.viewer.id})
            assert r.status == 201, r
            while True:
                m = json.loads(await asyncio.wait_for(v.recv(), 10))
                if m["type"] == "moderation.banned":
                    break
            assert m["data"] == {"stream": c.sid}, m
            r = await asyncio.to_thread(c.owner.call, "PATCH", base, {"title": "Renamed"})
            assert r.status == 200, r
            while True:  # the other viewer still gets the stream's events
                m = json.loads(await asyncio.wait_for(o.recv(), 10))
                if m["type"] == "stream.updated":
                    break
            assert m["data"]["stream"]["title"] == "Renamed", m
            try:  # the banned one does not
                while True:
                    m = json.loads(await asyncio.wait_for(v.recv(), 1.0))
                    assert m["type"] != "stream.updated", m
                    assert not m["type"].startswith("viewer."), m
            except asyncio.TimeoutError:
                pass
            r = await asyncio.to_thread(c.owner.call, "GET", f"{base}/viewers/count")
            assert r.status == 200 and r.json()["viewer_count"] == 1, r

    run(scenario())


def test_platform_ban_ends_private_stream_watch(srv):
    c = Cast(srv)
    base = f"/api/v1/streams/{c.sid}"
    r = c.owner.call("PATCH", base, {"visibility": "private", "allowed_viewers": [c.viewer.id]})
    assert r.status == 200, r
    pub = Cast(srv)  # a public stream: its watch goes on

    async def scenario():
        async with websockets.connect(srv.ws_url, extra_headers=c.viewer.headers()) as v:
            for sid in (c.sid, pub.sid):
                r = await ws_call(v, "streams.watch", {"stream_id": sid})
                assert r["type"] == "result", r
            r = await asyncio.to_thread(c.admin.call, "POST", "/api/v1/moderation/bans",
                                        {"user": c.viewer.id})
            assert r.status == 201, r
            while True:
                m = json.loads(await asyncio.wait_for(v.recv(), 10))
                if m["type"] == "moderation.banned":
                    break
            assert m["data"] == {"stream": c.sid}, m
            r = await asyncio.to_thread(c.owner.call, "PATCH", base, {"title": "Renamed"})
            assert r.status == 200, r
            r = await asyncio.to_thread(pub.owner.call, "PATCH", f"/api/v1/streams/{pub.sid}",
                                        {"title": "Public renamed"})
            assert r.status == 200, r
            while True:
                m = json.loads(await asyncio.wait_for(v.recv(), 10))
                if m["type"] == "stream.updated":
                    break
            assert m["data"]["stream"]["id"] == pub.sid, m

    run(scenario())


def test_ban_ends_private_stream_chat(server_factory):
    p = plugins()
    p["chat"] = {"path": CHAT_SO}
    s = server_factory(plugins=p, core=core({"backend": "sqlite"})).start()
    c = Cast(s)
    base = f"/api/v1/streams/{c.sid}"
    r = c.owner.call("PATCH", base, {"visibility": "private",
                                      "allowed_viewers": [c.viewer.id, c.other.id]})
    assert r.status == 200, r

    async def scenario():
        async with websockets.connect(s.ws_url, extra_headers=c.viewer.headers()) as v, \
                websockets.connect(s.ws_url, extra_headers=c.other.headers()) as o:
            for w in (v, o):
                r = await ws_call(w, "chat.join", {"stream_id": c.sid})
                assert r["type"] == "result", r
            r = await asyncio.to_thread(c.owner.call, "POST", c.m("/bans"), {"user": c.viewer.id})
            assert r.status == 201, r
            while True:
                m = json.loads(await asyncio.wait_for(v.recv(), 10))
                if m["type"] == "moderation.banned":
                    break
            assert m["data"] == {"stream": c.sid}, m
            r = await asyncio.to_thread(c.other.call, "POST", f"{base}/chat", {"text": "still here"})
            assert r.status == 201, r
            while True:
                m = json.loads(await asyncio.wait_for(o.recv(), 10))
                if m["type"] == "chat.message":
                    break
            assert m["data"]["text"] == "still here", m
            try:
                while True:
                    m = json.loads(await asyncio.wait_for(v.recv(), 1.0))
                    assert m["type"] != "chat.message", m
            except asyncio.TimeoutError:
                pass
            # leaving after the kick is harmless
            r = await ws_call(v, "chat.leave", {"stream_id": c.sid})
            assert r["type"] == "result", r

    run(scenario())


@pytest.fixture(scope="module", params=BACKENDS)
def srv_chat(request):
    """streams, reactions, qa, moderation and chat on each backend."""
    p = plugins()
    p["chat"] = {"path": CHAT_SO}
    s = Server(plugins=p, core=core(backend_config(request, request.param))).start()
    s.backend = request.param
    yield s
    try:
        assert s.stop() == 0
    finally:
        s.kill()


def ws_error(m, status, code):
    assert m["type"] == "error", m
    assert m["data"]["status"] == status and m["data"]["code"] == code, m
    assert m["data"].get("detail"), m
    return m


async def until_type(ws, type_):
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if m["type"] == type_:
            return m


def test_banned_user_cannot_rewatch_or_rejoin_private_stream(srv_chat):
    """A ban ends the watch and the chat subscription of a private stream, and from then on
    every way back in is refused with 403 banned (same connection, no reconnect): watch,
    chat.join, GET, REST join. An unban restores access at once."""
    srv = srv_chat
    c = Cast(srv)
    base = f"/api/v1/streams/{c.sid}"
    r = c.owner.call("PATCH", base, {"visibility": "private",
                                      "allowed_viewers": [c.viewer.id, c.other.id]})
    assert r.status == 200, r

    async def scenario():
        async with websockets.connect(srv.ws_url, extra_headers=c.viewer.headers()) as v:
            r = await ws_call(v, "streams.watch", {"stream_id": c.sid})
            assert r["type"] == "result", r
            r = await ws_call(v, "chat.join", {"stream_id": c.sid})
            assert r["type"] == "result", r
            r = await asyncio.to_thread(c.viewer.call, "POST", f"{base}/join")
            assert r.status == 200, r
            r = await asyncio.to_thread(c.smod.call, "POST", c.m("/bans"), {"user": c.viewer.id})
            assert r.status == 201, r
            await until_type(v, "moderation.banned")
            # the REST join ended with the ban: only the WebSocket watchers of others count
            r = await asyncio.to_thread(c.owner.call, "GET", f"{base}/viewers")
            assert r.status == 200 and c.viewer.id not in r.json()["users"], r
            # every way back in, on the same connection
            ws_error(await ws_call(v, "streams.watch", {"stream_id": c.sid}), 403, "banned")
            ws_error(await ws_call(v, "chat.join", {"stream_id": c.sid}), 403, "banned")
            for method, path in (("GET", base), ("POST", f"{base}/join"),
                                 ("GET", f"{base}/chat")):
                r = await asyncio.to_thread(c.viewer.call, method, path)
                b = problem(r, 403, "banned")
                assert "banned from this stream" in b["detail"], b
            # reactions and Q&A (streams.access consumers) refuse too
            ws_error(await ws_call(v, "reactions.send", {"stream_id": c.sid, "reaction": "heart"}),
                     403, "banned")
            problem(await asyncio.to_thread(c.ask, c.viewer), 403, "banned")
            # the other allowed viewer is unaffected
            r = await asyncio.to_thread(c.other.call, "GET", base)
            assert r.status == 200, r
            # unban: access comes back at once, still on the same connection
            r = await asyncio.to_thread(c.owner.call, "DELETE", c.m(f"/bans/{c.viewer.id}"))
            assert r.status == 200, r
            r = await ws_call(v, "streams.watch", {"stream_id": c.sid})
            assert r["type"] == "result" and r["data"]["stream"]["id"] == c.sid, r
            r = await ws_call(v, "chat.join", {"stream_id": c.sid})
            assert r["type"] == "result", r
            r = await asyncio.to_thread(c.viewer.call, "GET", base)
            assert r.status == 200, r
            r = await asyncio.to_thread(c.other.call, "POST", f"{base}/chat", {"text": "welcome"})
            assert r.status == 201, r
            m = await until_type(v, "chat.message")
            assert m["data"]["text"] == "welcome", m

    run(scenario())


def test_ban_does_not_reveal_or_close_other_streams(srv_chat):
    """A banned user who could not see the private stream anyway still gets 404 (its
    existence stays hidden); a stream ban closes only that stream; a public stream stays
    watchable for a banned user (Twitch's rule) while chatting there is denied; a timeout
    limits interaction, not viewing."""
    srv = srv_chat
    c = Cast(srv)
    base = f"/api/v1/streams/{c.sid}"
    r = c.owner.call("PATCH", base, {"visibility": "private", "allowed_viewers": [c.viewer.id]})
    assert r.status == 200, r
    for acct in (c.other, c.viewer):
        r = c.owner.call("POST", c.m("/bans"), {"user": acct.id})
        assert r.status == 201, r
    problem(c.other.call("GET", base), 404, "stream_not_found")  # never allowed: hidden
    problem(c.viewer.call("GET", base), 403, "banned")
    # the stream moderator and the owner are not banned and keep access
    for acct in (c.owner, c.smod):
        assert acct.call("GET", base).status == 200
    pub = Cast(srv)
    r = pub.owner.call("POST", pub.m("/bans"), {"user": c.viewer.id})
    assert r.status == 201, r
    assert c.viewer.call("GET", f"/api/v1/streams/{pub.sid}").status == 200
    r = c.viewer.call("POST", f"/api/v1/streams/{pub.sid}/chat", {"text": "hi"})
    assert r.status == 403 and r.json()["code"] == "denied", r

    async def scenario():
        async with websockets.connect(srv.ws_url, extra_headers=c.viewer.headers()) as v:
            r = await ws_call(v, "streams.watch", {"stream_id": pub.sid})
            assert r["type"] == "result", r
            r = await ws_call(v, "chat.join", {"stream_id": pub.sid})
            assert r["type"] == "result", r

    run(scenario())
    # a timed-out allowed viewer of a private stream still watches
    priv = Cast(srv)
    r = priv.owner.call("PATCH", f"/api/v1/streams/{priv.sid}",
                        {"visibility": "private", "allowed_viewers": [priv.viewer.id]})
    assert r.status == 200, r
    r = priv.owner.call("POST", priv.m("/timeouts"), {"user": priv.viewer.id, "duration_s": 600})
    assert r.status == 201, r
    assert priv.viewer.call("GET", f"/api/v1/streams/{priv.sid}").status == 200
    r = priv.viewer.call("POST", f"/api/v1/streams/{priv.sid}/chat", {"text": "hi"})
    assert r.status == 403 and r.json()["code"] == "denied", r


def test_platform_ban_refuses_private_streams_until_lifted(srv_chat):
    srv = srv_chat
    c = Cast(srv)
    base = f"/api/v1/streams/{c.sid}"
    r = c.owner.call("PATCH", base, {"visibility": "private", "allowed_viewers": [c.viewer.id]})
    assert r.status == 200, r
    pub = Cast(srv)
    r = c.admin.call("POST", "/api/v1/moderation/bans", {"user": c.viewer.id})
    assert r.status == 201, r
    b = problem(c.viewer.call("GET", base), 403, "banned")
    assert "platform" in b["detail"], b
    assert c.viewer.call("GET", f"/api/v1/streams/{pub.sid}").status == 200

    async def scenario(expect_ok):
        async with websockets.connect(srv.ws_url, extra_headers=c.viewer.headers()) as v:
            for t in ("streams.watch", "chat.join"):
                r = await ws_call(v, t, {"stream_id": c.sid})
                if expect_ok:
                    assert r["type"] == "result", r
                else:
                    ws_error(r, 403, "banned")

    run(scenario(False))
    r = c.admin.call("DELETE", f"/api/v1/moderation/bans/{c.viewer.id}")
    assert r.status == 200, r
    assert c.viewer.call("GET", base).status == 200
    run(scenario(True))


def test_going_private_ends_a_banned_viewers_subscriptions(srv_chat):
    """A user banned from a public stream may still watch it and read its chat (bans limit
    acting, not viewing). When the stream goes private with her among the allowed viewers,
    the ban closes it to her: her watch and chat end with moderation.banned, while another
    allowed viewer keeps both."""
    srv = srv_chat
    c = Cast(srv)
    base = f"/api/v1/streams/{c.sid}"
    assert c.owner.call("POST", c.m("/bans"), {"user": c.viewer.id}).status == 201

    async def scenario():
        async with websockets.connect(srv.ws_url, extra_headers=c.viewer.headers()) as v, \
                websockets.connect(srv.ws_url, extra_headers=c.other.headers()) as o:
            for w in (v, o):
                for t in ("streams.watch", "chat.join"):
                    r = await ws_call(w, t, {"stream_id": c.sid})
                    assert r["type"] == "result", (t, r)
            r = await asyncio.to_thread(c.owner.call, "PATCH", base, {
                "visibility": "private", "allowed_viewers": [c.viewer.id, c.other.id]})
            assert r.status == 200, r
            m = await until_type(v, "moderation.banned")
            assert m["data"] == {"stream": c.sid}, m
            r = await asyncio.to_thread(c.owner.call, "POST", f"{base}/chat", {"text": "private"})
            assert r.status == 201, r
            m = await until_type(o, "chat.message")
            assert m["data"]["text"] == "private", m
            seen = []
            r = await ws_call_seen(v, "chat.join", {"stream_id": c.sid}, seen)
            ws_error(r, 403, "banned")
            assert not [x for x in seen if x["type"] == "chat.message"], seen
            r = await asyncio.to_thread(c.owner.call, "GET", f"{base}/viewers")
            assert r.json()["users"] == [c.other.id], r

    run(scenario())


async def ws_call_seen(ws, type_, data, seen):
    """ws_call, keeping in seen what arrived before the reply."""
    id_ = os.urandom(4).hex()
    await ws.send(json.dumps({"type": type_, "id": id_, "data": data}))
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if m.get("id") == id_:
            return m
        seen.append(m)


def test_the_501st_blocked_term_is_refused(srv_chat):
    """A stream keeps at most 500 blocked terms: the 501st is refused with 409 too_many_terms
    (not answered 201 and then never listed nor enforced); all 500 are listed and enforced,
    and removing one makes room for another."""
    srv = srv_chat
    c = Cast(srv)
    conn = srv.connection(timeout=30)  # one connection for the 500 adds
    try:
        for i in range(500):
            r = request(conn, "POST", c.m("/terms"), {"pattern": f"word{i:03d}"},
                        token=c.owner.token)
            assert r.status == 201, (i, r)
    finally:
        conn.close()
    problem(c.smod.call("POST", c.m("/terms"), {"pattern": "onetoomany"}), 409, "too_many_terms")
    terms = c.owner.call("GET", c.m("/terms")).json()["terms"]
    assert len(terms) == 500 and "onetoomany" not in [t["pattern"] for t in terms]
    chat = f"/api/v1/streams/{c.sid}/chat"
    for text in ("first word000", "last word499"):  # every stored term is enforced
        r = c.viewer.call("POST", chat, {"text": text})
        assert r.status == 403 and r.json()["code"] == "denied", (text, r)
    assert c.viewer.call("POST", chat, {"text": "onetoomany"}).status == 201
    last = next(t for t in terms if t["pattern"] == "word499")
    assert c.owner.call("DELETE", c.m(f"/terms/{last['id']}")).status == 200
    assert c.owner.call("POST", c.m("/terms"), {"pattern": "onetoomany"}).status == 201
    r = c.viewer.call("POST", chat, {"text": "onetoomany"})
    assert r.status == 403 and r.json()["code"] == "denied", r


def test_stream_moderator_cannot_delete_the_owners_messages(srv_chat):
    """A stream moderator deletes viewers' messages but not the owner's (403
    cannot_delete_owner_message, the message stays); the owner and admins may."""
    srv = srv_chat
    c = Cast(srv)
    chat = f"/api/v1/streams/{c.sid}/chat"

    def say(acct, text):
        r = acct.call("POST", chat, {"text": text})
        assert r.status == 201, r
        return r.json()["message"]["id"]

    mine, theirs = say(c.owner, "the owner speaks"), say(c.viewer, "a viewer speaks")
    problem(c.smod.call("DELETE", f"{chat}/messages/{mine}"), 403, "cannot_delete_owner_message")
    texts = [m["text"] for m in c.anon.call("GET", chat).json()["messages"]]
    assert "the owner speaks" in texts, texts
    assert c.smod.call("DELETE", f"{chat}/messages/{theirs}").status == 200
    assert c.owner.call("DELETE", f"{chat}/messages/{mine}").status == 200
    other = say(c.owner, "again")
    assert c.admin.call("DELETE", f"{chat}/messages/{other}").status == 200
    assert c.anon.call("GET", chat).json()["messages"] == []
    acts = [(e["action"], e["actor"]) for e in c.owner.call("GET", c.m("/log")).json()["entries"]]
    assert ("message_delete", c.smod.id) in acts and ("message_delete", c.owner.id) in acts, acts


def test_moderation_state_survives_restart(server_factory):
    s = server_factory(plugins=plugins(), core=core({"backend": "sqlite"})).start()
    c = Cast(s)
    r = c.owner.call("POST", c.m("/bans"), {"user": c.viewer.id, "reason": "spam"})
    assert r.status == 201, r
    r = c.owner.call("POST", c.m("/timeouts"), {"user": c.other.id, "duration_s": 3600})
    assert r.status == 201, r
    r = c.owner.call("POST", c.m("/terms"), {"pattern": "forbidden*", "action": "deny"})
    assert r.status == 201, r
    assert s.stop() == 0
    s.start()
    # the ban and the timeout still apply at the next action, the term is still there
    for acct in (c.viewer, c.other):
        a = c.ask(acct)
        assert a.status == 403 and a.json()["code"] == "denied", a
    r = c.owner.call("GET", c.m("/terms"))
    assert r.status == 200 and [t["pattern"] for t in r.json()["terms"]] == ["forbidden*"], r
    r = c.owner.call("GET", c.m("/sanctions"))
    assert r.status == 200 and len(r.json()["sanctions"]) == 2, r
    r = c.owner.call("GET", c.m("/log"))
    assert r.status == 200 and len(r.json()["entries"]) >= 3, r


def test_moderator_changes_are_audited(srv):
    # stream moderators are managed by the streams plugin; their changes reach the audit log
    c = Cast(srv)  # the owner added c.smod as a moderator
    r = c.owner.call("DELETE", f"/api/v1/streams/{c.sid}/moderators/{c.smod.id}")
    assert r.status == 200, r
    deadline = time.time() + 10
    while True:
        r = c.owner.call("GET", c.m("/log"))
        assert r.status == 200, r
        acts = [(e["action"], e["actor"], e["target"]) for e in r.json()["entries"]]
        if ("moderator_removed", c.owner.id, c.smod.id) in acts:
            break
        assert time.time() < deadline, acts
        time.sleep(0.1)
    assert ("moderator_added", c.owner.id, c.smod.id) in acts, acts
