"""Streams plugin end to end against a real onaird, on both storage backends (sqlite and
CongoDB for mongodb): create / get / update / delete / start / end / browse, stream keys
and the media test route, viewers, stream moderators, follows, reports, and the
WebSocket scenario (a follower hears stream.started, watchers see viewer.count).

Every route with a requirement is called as anonymous, viewer, owner, other streamer,
stream moderator and admin. Accounts are real (POST /api/v1/auth/register); the admin
and the global moderator are API-key tokens (auth.api_keys)."""
import asyncio
import base64
import json
import os
import time
import urllib.parse

import pytest
import websockets

from onair_harness import PLUGIN_DIR, Server, make_token
from store_support import Congo, storage_config, unique_db

BACKENDS = ["sqlite", "mongodb"]
PW = "correct horse battery staple"
API_KEY = "backend1"
API_SECRET = "api-secret-0123456789-abcdefghijklmnop"
CATEGORIES = ["gaming", "music", "talk"]


def api_token(roles=("admin",), sub="backend-admin"):
    return make_token(sub=sub, roles=roles, secret=API_SECRET, iss=API_KEY)


ADMIN = None  # set per call: api_token() is cheap


def streams_plugin(**config):
    cfg = {"categories": CATEGORIES, "test_routes": True}
    cfg.update(config)
    return {"path": os.path.join(PLUGIN_DIR, "streams.so"), "config": cfg}


def core(backend):
    return {"auth": {"password_hash": "interactive", "api_keys": [f"{API_KEY}:{API_SECRET}"]},
            "storage": backend}


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
    s = Server(plugins={"streams": streams_plugin()}, core=core(backend)).start()
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


def problem(r, status, code, field=None):
    assert r.status == status, f"want {status} {code}, got {r!r}"
    assert (r.header("Content-Type") or "").startswith("application/problem+json"), r
    body = r.json()
    assert body["code"] == code, body
    assert body.get("detail"), body
    if field:
        assert body.get("field") == field, body
    return body


def create(acct, **fields):
    body = {"title": "A stream"}
    body.update(fields)
    r = acct.call("POST", "/api/v1/streams", body)
    assert r.status == 201, r
    return r.json()


class Cast:
    """The authorization matrix: one of each around one stream."""

    def __init__(self, srv, **fields):
        self.srv = srv
        self.anon = Anon(srv)
        self.viewer = Account(srv, "viewer", roles=["viewer"])
        self.owner = Account(srv, "owner")
        self.other = Account(srv, "other")
        self.smod = Account(srv, "smod")
        self.admin = Anon(srv, api_token())
        made = create(self.owner, **fields)
        self.stream, self.key = made["stream"], made["stream_key"]
        self.sid = self.stream["id"]
        r = self.owner.call("PUT", f"/api/v1/streams/{self.sid}/moderators/{self.smod.id}")
        assert r.status == 200, r

    def path(self, tail=""):
        return f"/api/v1/streams/{self.sid}{tail}"


# ---- create / get ------------------------------------------------------------------------------
def test_create_and_get(srv):
    c = Cast(srv, description="hello there", category="gaming", tags=["Speedrun", "speedrun", "pb"],
             settings={"chat_slow_mode_s": 10, "max_viewers": 50})
    s = c.stream
    assert c.key.startswith("sk_") and len(c.key) == 46
    assert s["owner"] == c.owner.id and s["status"] == "created" and s["visibility"] == "public"
    assert s["tags"] == ["speedrun", "pb"]  # lower-cased, deduplicated
    assert s["settings"] == {"chat_slow_mode_s": 10, "chat_followers_only": False,
                             "chat_verified_only": False, "max_viewers": 50,
                             "record_on_start": False}
    assert s["created_at"] > 0 and s["started_at"] is None and s["ended_at"] is None
    assert "key_hash" not in s and "search" not in s
    # the key is never shown again
    for who in (c.anon, c.viewer, c.owner, c.other, c.smod, c.admin):
        r = who.call("GET", c.path())
        assert r.status == 200, r
        assert c.key not in r.body and "key_hash" not in r.body
    # moderators are shown to the owner, stream moderators and admins only
    assert c.owner.call("GET", c.path()).json()["stream"]["moderators"] == [c.smod.id]
    assert "moderators" not in c.anon.call("GET", c.path()).json()["stream"]
    assert "moderators" not in c.other.call("GET", c.path()).json()["stream"]
    # who may create: a signed-in account with the streamer role
    problem(c.anon.call("POST", "/api/v1/streams", {"title": "x"}), 401, "unauthorized")
    problem(c.viewer.call("POST", "/api/v1/streams", {"title": "x"}), 403, "forbidden")
    problem(c.admin.call("POST", "/api/v1/streams", {"title": "x"}), 403, "forbidden")
    problem(c.anon.call("GET", "/api/v1/streams/" + "0" * 24), 404, "stream_not_found")
    problem(c.anon.call("GET", "/api/v1/streams/nope"), 404, "stream_not_found")
    r = c.anon.call("GET", "/api/v1/streams/categories")
    assert r.status == 200 and r.json() == {"categories": CATEGORIES, "any": False}


@pytest.mark.parametrize("body,status,code,field", [
    ({"title": "x" * 141}, 400, "invalid_field", "title"),
    ({"title": ""}, 400, "invalid_field", "title"),
    ({"title": 5}, 400, "invalid_field", "title"),
    ({"title": "a\u0001b"}, 400, "invalid_field", "title"),
    ({}, 400, "missing_field", "title"),
    ({"title": "ok", "bogus": 1}, 400, "unknown_field", "bogus"),
    ({"title": "ok", "description": "d" * 2001}, 400, "invalid_field", "description"),
    ({"title": "ok", "category": "cooking"}, 400, "unknown_category", "category"),
    ({"title": "ok", "tags": [str(i) for i in range(11)]}, 400, "invalid_field", "tags"),
    ({"title": "ok", "tags": ["t" * 26]}, 400, "invalid_field", "tags"),
    ({"title": "ok", "tags": "a,b"}, 400, "invalid_field", "tags"),
    ({"title": "ok", "visibility": "secret"}, 400, "invalid_field", "visibility"),
    ({"title": "ok", "allowed_viewers": "x"}, 400, "invalid_field", "allowed_viewers"),
    ({"title": "ok", "settings": {"chat_slow_mode_s": 1}}, 400, "invalid_field",
     "settings.chat_slow_mode_s"),
    ({"title": "ok", "settings": {"max_viewers": -1}}, 400, "invalid_field",
     "settings.max_viewers"),
    ({"title": "ok", "settings": {"record_on_start": "yes"}}, 400, "invalid_field",
     "settings.record_on_start"),
    ({"title": "ok", "settings": {"colour": 1}}, 400, "unknown_field", "settings.colour"),
    # the declared body: JSON types are strict, null only where it means "none"
    ({"title": None}, 400, "invalid_field", "title"),
    ({"title": "ok", "description": 5}, 400, "invalid_field", "description"),
    ({"title": "ok", "description": "a\u0007b"}, 400, "invalid_field", "description"),
    ({"title": "ok", "category": 5}, 400, "invalid_field", "category"),
    ({"title": "ok", "category": ""}, 400, "invalid_field", "category"),
    ({"title": "ok", "tags": [1]}, 400, "invalid_field", "tags"),
    ({"title": "ok", "tags": [""]}, 400, "invalid_field", "tags"),
    ({"title": "ok", "visibility": None}, 400, "invalid_field", "visibility"),
    ({"title": "ok", "allowed_viewers": ["u" * 129]}, 400, "invalid_field", "allowed_viewers"),
    ({"title": "ok", "allowed_viewers": [str(i) for i in range(1001)]}, 400, "invalid_field",
     "allowed_viewers"),
    ({"title": "ok", "settings": 5}, 400, "invalid_field", "settings"),
    ({"title": "ok", "settings": {"chat_slow_mode_s": "10"}}, 400, "invalid_field",
     "settings.chat_slow_mode_s"),
    ({"title": "ok", "settings": {"chat_slow_mode_s": 121}}, 400, "invalid_field",
     "settings.chat_slow_mode_s"),
    ({"title": "ok", "settings": {"max_viewers": 1.5}}, 400, "invalid_field",
     "settings.max_viewers"),
    ({"title": "ok", "settings": {"chat_followers_only": 1}}, 400, "invalid_field",
     "settings.chat_followers_only"),
    ({"Title": "misspelt"}, 400, "unknown_field", "Title"),
])
def test_create_validation(srv, body, status, code, field):
    # a fresh account every 20 cases: streams.create allows 30 a minute (bad bodies count)
    if getattr(srv, "_val_uses", 20) >= 20:
        srv._val_acct, srv._val_uses = Account(srv, "val"), 0
    srv._val_uses += 1
    acct = srv._val_acct
    problem(acct.call("POST", "/api/v1/streams", body), status, code, field)


def test_create_limits_accepted(srv):
    acct = Account(srv, "limits")
    s = create(acct, title="é" * 140, description="d" * 2000, tags=["t" * 25] * 1 +
               [str(i) for i in range(9)], category=None)["stream"]
    assert len(s["title"]) == 140 and len(s["tags"]) == 10 and s["category"] is None
    s = create(acct, title="Bounds", settings={"chat_slow_mode_s": 3, "max_viewers": 1000000},
               allowed_viewers=["u" * 128])["stream"]
    assert s["settings"]["chat_slow_mode_s"] == 3 and s["allowed_viewers"] == ["u" * 128], s
    assert create(acct, title="Off", settings={"chat_slow_mode_s": 0})["stream"]["settings"][
        "chat_slow_mode_s"] == 0
    problem(acct.call("POST", "/api/v1/streams", "{not json",
                      headers={"Content-Type": "application/json"}), 400, "invalid_json")
    problem(acct.call("POST", "/api/v1/streams", ["title"]), 400, "invalid_json")


# ---- update ------------------------------------------------------------------------------------
def test_update_matrix(srv):
    c = Cast(srv, category="talk")
    p = c.path()
    problem(c.anon.call("PATCH", p, {"title": "t"}), 401, "unauthorized")
    problem(c.viewer.call("PATCH", p, {"title": "t"}), 403, "forbidden")
    problem(c.other.call("PATCH", p, {"title": "t"}), 403, "forbidden")
    # stream moderators: title, category and tags only
    r = c.smod.call("PATCH", p, {"title": "Mod title", "category": "music", "tags": ["x"]})
    assert r.status == 200, r
    s = r.json()["stream"]
    assert (s["title"], s["category"], s["tags"]) == ("Mod title", "music", ["x"])
    problem(c.smod.call("PATCH", p, {"description": "no"}), 403, "field_not_allowed",
            "description")
    problem(c.smod.call("PATCH", p, {"visibility": "private"}), 403, "field_not_allowed",
            "visibility")
    # the owner: everything
    r = c.owner.call("PATCH", p, {"description": "new", "visibility": "unlisted",
                                  "settings": {"record_on_start": False, "max_viewers": 7}})
    assert r.status == 200, r
    s = r.json()["stream"]
    assert s["description"] == "new" and s["visibility"] == "unlisted"
    assert s["settings"]["record_on_start"] is False and s["settings"]["chat_slow_mode_s"] == 0
    assert s["settings"]["max_viewers"] == 7
    assert s["updated_at"] >= s["created_at"]
    # admins too
    r = c.admin.call("PATCH", p, {"title": "Admin title", "visibility": "public"})
    assert r.status == 200 and r.json()["stream"]["title"] == "Admin title", r
    problem(c.owner.call("PATCH", p, {"title": "x" * 141}), 400, "invalid_field", "title")
    problem(c.owner.call("PATCH", p, {"category": "nope"}), 400, "unknown_category", "category")
    problem(c.owner.call("PATCH", p, {"nope": 1}), 400, "unknown_field", "nope")
    problem(c.owner.call("PATCH", p, {"title": 5}), 400, "invalid_field", "title")
    problem(c.owner.call("PATCH", p, {"tags": ["ok", "x" * 26]}), 400, "invalid_field", "tags")
    problem(c.owner.call("PATCH", p, {"settings": {"max_viewers": True}}), 400, "invalid_field",
            "settings.max_viewers")
    problem(c.owner.call("PATCH", p, {"settings": {"x": 1}}), 400, "unknown_field", "settings.x")
    problem(c.owner.call("PATCH", p, {"category": None, "visibility": "hidden"}), 400,
            "invalid_field", "visibility")
    problem(c.owner.call("PATCH", p, {}), 400, "invalid_request")
    # a body mistake is answered before the stream is looked up, whoever asks
    problem(c.other.call("PATCH", p, {"title": ""}), 400, "invalid_field", "title")
    problem(c.owner.call("PATCH", "/api/v1/streams/" + "0" * 24, {"nope": 1}), 400,
            "unknown_field", "nope")
    # nothing of a refused update was stored
    r = c.owner.call("GET", p).json()["stream"]
    assert r["visibility"] == "public" and r["category"] == "music" and "x" not in r["settings"]
    problem(c.owner.call("PATCH", "/api/v1/streams/" + "0" * 24, {"title": "t"}), 404,
            "stream_not_found")
    assert c.anon.call("GET", p).json()["stream"]["title"] == "Admin title"


# ---- private streams ---------------------------------------------------------------------------
def test_private_stream_is_404_for_others(srv):
    c = Cast(srv, title="Secret stream", visibility="private")
    allowed = Account(srv, "allowed")
    r = c.owner.call("PATCH", c.path(), {"allowed_viewers": [allowed.id]})
    assert r.status == 200 and r.json()["stream"]["allowed_viewers"] == [allowed.id]
    for who in (c.anon, c.viewer, c.other):
        problem(who.call("GET", c.path()), 404, "stream_not_found")
        problem(who.call("GET", c.path("/viewers/count")), 404, "stream_not_found")
        if who is not c.anon:
            problem(who.call("POST", c.path("/join")), 404, "stream_not_found")
            problem(who.call("POST", c.path("/report"), {"reason": "spam"}), 404,
                    "stream_not_found")
            problem(who.call("PATCH", c.path(), {"title": "t"}), 404, "stream_not_found")
            problem(who.call("DELETE", c.path()), 404, "stream_not_found")
    for who in (c.owner, c.smod, c.admin, allowed):
        assert who.call("GET", c.path()).status == 200, who
    problem(allowed.call("POST", c.path("/join")), 409, "not_live")  # visible, not live yet
    assert c.owner.call("POST", c.path("/start")).status == 200
    assert allowed.call("POST", c.path("/join")).status == 200
    for who in (c.viewer, c.other):  # live or not, it does not exist for them
        problem(who.call("POST", c.path("/join")), 404, "stream_not_found")
    assert c.owner.call("POST", c.path("/end")).status == 200
    # listed for those allowed only
    q = "/api/v1/streams?q=secret&limit=100"
    for who, listed in ((c.anon, False), (c.other, False), (allowed, True), (c.owner, True),
                        (c.smod, True), (c.admin, True)):
        ids = [s["id"] for s in who.call("GET", q).json()["streams"]]
        assert (c.sid in ids) == listed, (who, ids)


# ---- start / end / delete ----------------------------------------------------------------------
def test_lifecycle(srv):
    c = Cast(srv)
    for who, status, code in ((c.anon, 401, "unauthorized"), (c.viewer, 403, "forbidden"),
                              (c.other, 403, "forbidden"), (c.smod, 403, "forbidden"),
                              (c.admin, 403, "forbidden")):
        problem(who.call("POST", c.path("/start")), status, code)
    problem(c.owner.call("POST", c.path("/end")), 409, "not_live")
    r = c.owner.call("POST", c.path("/start"))
    assert r.status == 200, r
    s = r.json()["stream"]
    assert s["status"] == "live" and s["started_at"] > 0
    problem(c.owner.call("POST", c.path("/start")), 409, "already_live")
    # the live limit (default 1)
    second = create(c.owner, title="Second")["stream"]
    problem(c.owner.call("POST", f"/api/v1/streams/{second['id']}/start"), 409, "live_limit")
    # not while live
    problem(c.owner.call("DELETE", c.path()), 409, "stream_live")
    problem(c.admin.call("DELETE", c.path()), 409, "stream_live")
    for who, status, code in ((c.anon, 401, "unauthorized"), (c.viewer, 403, "forbidden"),
                              (c.other, 403, "forbidden"), (c.smod, 403, "forbidden")):
        problem(who.call("POST", c.path("/end")), status, code)
        problem(who.call("DELETE", c.path()), status, code)
    r = c.owner.call("POST", c.path("/end"))
    assert r.status == 200 and r.json()["stream"]["status"] == "ended", r
    ended_at = r.json()["stream"]["ended_at"]
    assert ended_at >= s["started_at"]
    r = c.owner.call("POST", c.path("/end"))  # idempotent
    assert r.status == 200 and r.json()["stream"]["ended_at"] == ended_at, r
    # the limit counts live streams only; an admin may end someone's stream
    r = c.owner.call("POST", f"/api/v1/streams/{second['id']}/start")
    assert r.status == 200, r
    r = c.admin.call("POST", f"/api/v1/streams/{second['id']}/end")
    assert r.status == 200 and r.json()["stream"]["status"] == "ended", r
    # an ended stream may go live again
    assert c.owner.call("POST", c.path("/start")).json()["stream"]["status"] == "live"
    assert c.owner.call("POST", c.path("/end")).status == 200
    r = c.owner.call("DELETE", c.path())
    assert r.status == 204, r
    problem(c.anon.call("GET", c.path()), 404, "stream_not_found")
    problem(c.owner.call("DELETE", c.path()), 404, "stream_not_found")
    r = c.admin.call("DELETE", f"/api/v1/streams/{second['id']}")
    assert r.status == 204, r


def test_live_limit_config_and_verified(server_factory):
    s = server_factory(plugins={"streams": streams_plugin(max_live_per_user=2,
                                                          require_verified_to_stream=True,
                                                          test_routes=False)},
                       core=core({"backend": "sqlite"})).start()
    a = Account(s, "ver")
    ids = [create(a, title=f"S{i}")["stream"]["id"] for i in range(3)]
    problem(a.call("POST", f"/api/v1/streams/{ids[0]}/start"), 403, "verification_required")
    r = s.http("PATCH", f"/api/v1/admin/users/{a.id}", {"verified": True}, token=api_token())
    assert r.status == 200, r
    for sid in ids[:2]:
        assert a.call("POST", f"/api/v1/streams/{sid}/start").status == 200
    problem(a.call("POST", f"/api/v1/streams/{ids[2]}/start"), 409, "live_limit")
    # the media test route is off unless test_routes is set
    problem(s.http("POST", "/api/v1/streams/_media", {"event": "publish", "stream_key": "sk_x"}),
            404, "not_found")
    problem(s.http("POST", "/api/v1/streams/_media", {"bogus": 1}), 404, "not_found")


# ---- browse ------------------------------------------------------------------------------------
def test_browse(srv):
    tag = "t" + os.urandom(4).hex()
    a, b = Account(srv, "browsea"), Account(srv, "browseb")
    made = []
    for i, (acct, cat) in enumerate(((a, "gaming"), (a, "music"), (b, "gaming"), (b, "talk"),
                                     (a, "talk"))):
        made.append(create(acct, title=f"Browse {tag} number{i}", category=cat,
                           tags=[tag, f"n{i}"])["stream"])
    hidden = create(a, title=f"Hidden {tag}", tags=[tag], visibility="unlisted")["stream"]
    live = made[1]
    assert a.call("POST", f"/api/v1/streams/{live['id']}/start").status == 200

    def ids(who, query):
        r = who.call("GET", "/api/v1/streams?" + query)
        assert r.status == 200, r
        return [s["id"] for s in r.json()["streams"]]

    anon = Anon(srv)
    # live first, then newest
    want = [live["id"]] + [s["id"] for s in reversed(made) if s is not live]
    assert ids(anon, f"tag={tag}&limit=100") == want
    assert hidden["id"] not in ids(b, f"tag={tag}")  # unlisted: never listed ...
    assert hidden["id"] in ids(a, f"tag={tag}")  # ... except to its owner
    assert ids(anon, f"tag={tag}&status=live") == [live["id"]]
    assert ids(anon, f"tag={tag}&status=created&category=gaming") == [made[2]["id"],
                                                                      made[0]["id"]]
    assert ids(anon, f"tag={tag}&owner={b.id}") == [made[3]["id"], made[2]["id"]]
    assert ids(anon, f"tag=N3&owner={b.id}") == [made[3]["id"]]  # tags match lower-cased
    assert ids(anon, f"q=number4+{tag}") == [made[4]["id"]]
    assert set(ids(anon, f"q=BROW+{tag[:6]}&limit=100")) >= {s["id"] for s in made}
    assert ids(anon, f"q={tag}+missingword") == []
    # paging: stable, no repeats, no gaps
    seen, after = [], None
    while True:
        r = anon.call("GET", f"/api/v1/streams?tag={tag}&limit=2" + (f"&after={after}" if after
                                                                     else ""))
        assert r.status == 200, r
        page = r.json()
        seen += [s["id"] for s in page["streams"]]
        after = page["next"]
        if not after:
            break
    assert seen == want
    for q in ("limit=0", "limit=101", "limit=x", "status=paused", "q=", "tag=" + "x" * 26):
        problem(anon.call("GET", "/api/v1/streams?" + q), 400, "invalid_query")
    assert a.call("POST", f"/api/v1/streams/{live['id']}/end").status == 200


def test_browse_owner_must_be_a_user_id(srv):
    """?owner= filters by a user id; a value that cannot be one is a mistake (400 naming the
    parameter), not an empty page that looks like an answer. Ids of accounts and of API-key
    subjects stay usable."""
    a = Account(srv, "ownerq")
    sid = create(a, title="Owned")["stream"]["id"]
    anon = Anon(srv)
    for garbage in ("<script>alert(1)</script>", "a b", '{"$ne":null}', "x' OR '1'='1", "",
                    "x" * 129, "\u00e9t\u00e9", "owner;drop"):
        problem(anon.call("GET", "/api/v1/streams?owner=" + urllib.parse.quote(garbage, safe="")),
                400, "invalid_query", "owner")
    r = anon.call("GET", f"/api/v1/streams?owner={a.id}")
    assert r.status == 200 and [s["id"] for s in r.json()["streams"]] == [sid], r
    for fine in ("ext-user-7", "auth0|5f1c", "ada@example.org", "0" * 24):
        r = anon.call("GET", "/api/v1/streams?owner=" + urllib.parse.quote(fine, safe=""))
        assert r.status == 200 and r.json()["streams"] == [], (fine, r)
    # the other query mistakes name their parameter too
    for q, field in (("limit=0", "limit"), ("status=paused", "status"), ("tag=" + "x" * 26, "tag"),
                     ("q=", "q"), ("category=" + "c" * 65, "category"), ("after=nope", "after")):
        problem(anon.call("GET", "/api/v1/streams?" + q), 400, "invalid_query", field)


# ---- viewers and stream moderators -----------------------------------------------------------
def test_viewers(srv):
    c = Cast(srv, settings={"max_viewers": 2})
    problem(c.anon.call("POST", c.path("/join")), 401, "unauthorized")
    assert c.owner.call("POST", c.path("/start")).status == 200
    r = c.viewer.call("POST", c.path("/join"))
    assert r.status == 200 and r.json() == {"joined": True, "viewer_count": 1, "ttl_s": 60}, r
    assert c.viewer.call("POST", c.path("/join")).json()["viewer_count"] == 1  # idempotent
    assert c.other.call("POST", c.path("/join")).json()["viewer_count"] == 2
    third = Account(srv, "third")
    problem(third.call("POST", c.path("/join")), 409, "stream_full")
    assert c.smod.call("POST", c.path("/join")).status == 200  # staff get in anyway
    r = c.anon.call("GET", c.path("/viewers/count"))
    assert r.status == 200 and r.json()["viewer_count"] == 3 and r.json()["peak_viewers"] == 3
    for who, status, code in ((c.anon, 401, "unauthorized"), (c.viewer, 403, "forbidden"),
                              (c.other, 403, "forbidden")):
        problem(who.call("GET", c.path("/viewers")), status, code)
    for who in (c.owner, c.smod, c.admin):
        r = who.call("GET", c.path("/viewers"))
        assert r.status == 200, r
        assert sorted(r.json()["users"]) == sorted([c.viewer.id, c.other.id, c.smod.id])
        assert r.json()["anonymous"] == 0
    r = c.viewer.call("POST", c.path("/leave"))
    assert r.status == 200 and r.json() == {"joined": False, "viewer_count": 2}, r
    assert c.viewer.call("POST", c.path("/leave")).json()["viewer_count"] == 2
    assert c.anon.call("GET", c.path("/viewers/count")).json()["peak_viewers"] == 3
    assert c.owner.call("POST", c.path("/end")).status == 200


def test_owner_and_staff_take_no_seat(srv):
    """settings.max_viewers counts viewers only: the owner, stream moderators and admins get
    in and leave every seat to the others."""
    c = Cast(srv, settings={"max_viewers": 1})
    assert c.owner.call("POST", c.path("/start")).status == 200
    assert c.owner.call("POST", c.path("/join")).json()["viewer_count"] == 1
    r = c.viewer.call("POST", c.path("/join"))  # the one seat is still free
    assert r.status == 200 and r.json()["viewer_count"] == 2, r
    problem(c.other.call("POST", c.path("/join")), 409, "stream_full")
    # staff coming in later take no seat either: the next viewer is still refused, and
    # once the viewer leaves, the seat is free again
    for who in (c.smod, c.admin):
        assert who.call("POST", c.path("/join")).status == 200, who
    problem(c.other.call("POST", c.path("/join")), 409, "stream_full")
    r = c.anon.call("GET", c.path("/viewers/count"))
    assert r.json()["viewer_count"] == 4, r  # they are viewers all the same
    assert c.viewer.call("POST", c.path("/leave")).status == 200
    assert c.other.call("POST", c.path("/join")).status == 200
    problem(c.viewer.call("POST", c.path("/join")), 409, "stream_full")
    assert c.owner.call("POST", c.path("/end")).status == 200


def test_join_needs_a_live_stream_and_the_end_clears_viewers(srv):
    """Joining a stream that is not live is 409 not_live. A WebSocket watch of a stream that
    is not live is allowed (to hear stream.started) but counts no viewer until the stream
    goes live. When the stream ends, its count is 0: REST viewers are gone, watchers stay
    subscribed but uncounted until the next start."""
    c = Cast(srv)
    late = Account(srv, "late")
    problem(c.viewer.call("POST", c.path("/join")), 409, "not_live")  # created
    problem(c.owner.call("POST", c.path("/join")), 409, "not_live")  # the owner too

    async def scenario():
        async with websockets.connect(srv.ws_url) as a, \
                websockets.connect(srv.ws_url,
                                   extra_headers={"Authorization": "Bearer " + c.other.token}) as o:
            A, O = Client(a), Client(o)
            for X in (A, O):
                r = await X.call("streams.watch", {"stream_id": c.sid})
                assert r["type"] == "result", r
                assert r["data"]["counted"] is False and r["data"]["viewer_count"] == 0, r
            r = c.anon.call("GET", c.path("/viewers/count"))
            assert r.json()["viewer_count"] == 0, r

            assert c.owner.call("POST", c.path("/start")).status == 200
            await A.wait(lambda m: m["type"] == "stream.started")
            await A.wait(lambda m: m["type"] == "viewer.count" and m["data"]["count"] == 2)
            r = await O.call("streams.watch", {"stream_id": c.sid})  # already counted
            assert r["data"]["counted"] is True and r["data"]["viewer_count"] == 2, r
            assert c.viewer.call("POST", c.path("/join")).json()["viewer_count"] == 3
            await A.wait(lambda m: m["type"] == "viewer.count" and m["data"]["count"] == 3)

            r = c.owner.call("POST", c.path("/end"))
            assert r.status == 200 and r.json()["stream"]["viewer_count"] == 0, r
            m = await A.wait(lambda m: m["type"] == "stream.ended")
            assert m["data"]["stream"]["peak_viewers"] == 3, m
            await A.wait(lambda m: m["type"] == "viewer.count" and m["data"]["count"] == 0)
            r = c.anon.call("GET", c.path("/viewers/count"))
            assert r.json()["viewer_count"] == 0 and r.json()["peak_viewers"] == 3, r
            r = c.owner.call("GET", c.path("/viewers"))
            assert r.json() == {"users": [], "anonymous": 0, "viewer_count": 0}, r
            for who in (c.viewer, late):  # ended: nobody joins
                problem(who.call("POST", c.path("/join")), 409, "not_live")
            r = await O.call("streams.watch", {"stream_id": c.sid})
            assert r["data"]["counted"] is False and r["data"]["viewer_count"] == 0, r

            # live again: the watchers (still subscribed) count again, the REST viewer of
            # the last session does not until she joins again
            assert c.owner.call("POST", c.path("/start")).status == 200
            await A.wait(lambda m: m["type"] == "stream.started")
            await A.wait(lambda m: m["type"] == "viewer.count" and m["data"]["count"] == 2)
            r = c.owner.call("GET", c.path("/viewers"))
            assert r.json()["users"] == [c.other.id] and r.json()["anonymous"] == 1, r
            assert late.call("POST", c.path("/join")).json()["viewer_count"] == 3
            assert c.owner.call("POST", c.path("/end")).status == 200
            await A.wait(lambda m: m["type"] == "viewer.count" and m["data"]["count"] == 0)

    run(scenario())


def test_waiting_watchers_and_max_viewers(srv):
    """Watchers of a stream that is not live become viewers when it starts, up to
    settings.max_viewers (the owner takes no seat); the others are unsubscribed and told
    (streams.unwatched, code stream_full)."""
    c = Cast(srv, settings={"max_viewers": 1})

    def hdr(acct):
        return {"Authorization": "Bearer " + acct.token}

    async def scenario():
        async with websockets.connect(srv.ws_url, extra_headers=hdr(c.owner)) as ow, \
                websockets.connect(srv.ws_url, extra_headers=hdr(c.viewer)) as v, \
                websockets.connect(srv.ws_url, extra_headers=hdr(c.other)) as o:
            OW, V, O = Client(ow), Client(v), Client(o)
            for X in (OW, V, O):
                r = await X.call("streams.watch", {"stream_id": c.sid})
                assert r["type"] == "result" and r["data"]["counted"] is False, r
            assert c.owner.call("POST", c.path("/start")).status == 200
            await OW.wait(lambda m: m["type"] == "viewer.count" and m["data"]["count"] == 2)
            r = c.owner.call("GET", c.path("/viewers"))
            users = r.json()["users"]
            assert c.owner.id in users and len(users) == 2, r
            # the one of viewer / other who did not get the seat
            out, kept = (O, V) if c.viewer.id in users else (V, O)
            m = await out.wait(lambda m: m["type"] == "streams.unwatched")
            assert m["data"]["stream"] == c.sid and m["data"]["code"] == "stream_full", m
            assert not any(x["type"] == "streams.unwatched" for x in kept.seen + OW.seen)
            # watching again while full: refused
            r = await out.call("streams.watch", {"stream_id": c.sid})
            assert r["type"] == "error" and r["data"]["code"] == "stream_full", r
            # the seat frees up: she gets in
            r = await kept.call("streams.unwatch", {"stream_id": c.sid})
            assert r["data"] == {"unwatched": True}, r
            r = await out.call("streams.watch", {"stream_id": c.sid})
            assert r["type"] == "result" and r["data"]["counted"] is True, r
            assert r["data"]["viewer_count"] == 2, r
            assert c.owner.call("POST", c.path("/end")).status == 200

    run(scenario())


def test_record_on_start_is_stored(srv):
    """record_on_start is a setting like the others (the recording plugin acts on it when a
    stream goes live: tests/integration/test_recording.py); only booleans are taken."""
    acct = Account(srv, "rec")
    s = create(acct, title="Rec", settings={"record_on_start": True})["stream"]
    assert s["settings"]["record_on_start"] is True
    path = f"/api/v1/streams/{s['id']}"
    r = acct.call("PATCH", path, {"settings": {"record_on_start": False}})
    assert r.status == 200 and r.json()["stream"]["settings"]["record_on_start"] is False, r
    problem(acct.call("PATCH", path, {"settings": {"record_on_start": 1}}), 400,
            "invalid_field", "settings.record_on_start")
    r = acct.call("PATCH", path, {"settings": {"record_on_start": True}})
    assert r.status == 200 and r.json()["stream"]["settings"]["record_on_start"] is True, r
    assert acct.call("GET", path).json()["stream"]["settings"]["record_on_start"] is True


def storage_for(request, backend):
    if backend == "mongodb":
        return storage_config("mongodb", uri=request.getfixturevalue("congo").uri,
                              database=unique_db())
    return {"backend": "sqlite"}


def until(pred, what, timeout=15):
    """Poll pred() (it returns a value when done) until it is true or the deadline passes."""
    deadline = time.time() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.time() < deadline, what
        time.sleep(0.1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_peak_survives_a_restart_while_live(request, backend):
    """The peak reaches the stream's document while the stream is live (coalesced, about
    once a second), so an onaird that dies with the stream live does not lose it."""
    s = Server(plugins={"streams": streams_plugin()}, core=core(storage_for(request, backend)))
    s.start()
    try:
        owner = Account(s, "peak")
        sid = create(owner, title="Peak")["stream"]["id"]
        path = f"/api/v1/streams/{sid}"
        assert owner.call("POST", path + "/start").status == 200
        viewers = [Account(s, f"pv{i}") for i in range(3)]
        for v in viewers:
            assert v.call("POST", path + "/join").status == 200
        assert viewers[0].call("POST", path + "/leave").status == 200
        # the document (what GET shows) gets the peak while live, without an end
        until(lambda: s.http("GET", path).json()["stream"]["peak_viewers"] == 3,
              "the peak never reached the document")
        s.kill()  # no goodbye: nothing is written at shutdown
        s.start()
        r = s.http("GET", path)
        assert r.status == 200, r
        st = r.json()["stream"]
        assert st["peak_viewers"] == 3 and st["status"] == "live", st
        r = s.http("GET", path + "/viewers/count").json()
        assert r["viewer_count"] == 0 and r["peak_viewers"] == 3, r
        # a smaller audience after the restart never lowers it
        assert viewers[1].call("POST", path + "/join").status == 200
        r = owner.call("POST", path + "/end")
        assert r.status == 200 and r.json()["stream"]["peak_viewers"] == 3, r
        assert s.http("GET", path).json()["stream"]["peak_viewers"] == 3
        assert s.stop() == 0
    finally:
        s.kill()


@pytest.mark.parametrize("backend", BACKENDS)
def test_rest_viewers_expire_without_heartbeat(request, backend):
    """A REST viewer counts for rest_viewer_ttl_s after its last join: one who calls join
    again (the heartbeat) stays, one who never calls leave is dropped by the sweep."""
    s = Server(plugins={"streams": streams_plugin(rest_viewer_ttl_s=10)},
               core=core(storage_for(request, backend)))
    s.start()
    try:
        owner, beating, silent = (Account(s, n) for n in ("ttlo", "ttlb", "ttls"))
        sid = create(owner, title="TTL")["stream"]["id"]
        path = f"/api/v1/streams/{sid}"
        assert owner.call("POST", path + "/start").status == 200
        for v in (beating, silent):
            r = v.call("POST", path + "/join")
            assert r.status == 200 and r.json()["ttl_s"] == 10, r

        def silent_gone():
            # the heartbeat, well inside the TTL: 2 s between joins
            r = beating.call("POST", path + "/join")
            assert r.status == 200 and r.json()["joined"] is True, r
            users = owner.call("GET", path + "/viewers").json()["users"]
            if silent.id in users:
                time.sleep(2)
                return None
            return users

        users = until(silent_gone, "the silent REST viewer never expired", timeout=40)
        assert users == [beating.id], users  # the heartbeat kept her
        r = s.http("GET", path + "/viewers/count").json()
        assert r["viewer_count"] == 1 and r["peak_viewers"] == 2, r
        # the expired viewer may come back (and is counted again)
        assert silent.call("POST", path + "/join").json()["viewer_count"] == 2
        assert owner.call("POST", path + "/end").status == 200
        assert s.stop() == 0
    finally:
        s.kill()


def test_rest_viewer_ttl_minimum(server_factory):
    s = server_factory(plugins={"streams": dict(streams_plugin(rest_viewer_ttl_s=5),
                                                required=True)},
                       core=core({"backend": "sqlite"}))
    s.start(wait=False)
    assert s.proc.wait(30) != 0
    s._reader.join(5)
    assert "rest_viewer_ttl_s: 5 is below the minimum 10" in s.log(), s.log()


def test_stream_moderators(srv):
    c = Cast(srv)
    m = f"/moderators/{c.other.id}"
    for who, status, code in ((c.anon, 401, "unauthorized"), (c.viewer, 403, "forbidden"),
                              (c.other, 403, "forbidden"), (c.smod, 403, "forbidden")):
        problem(who.call("PUT", c.path(m)), status, code)
        problem(who.call("DELETE", c.path(f"/moderators/{c.smod.id}")), status, code)
        problem(who.call("GET", c.path("/moderators")), status, code)
    r = c.admin.call("PUT", c.path(m))
    assert r.status == 200 and sorted(r.json()["moderators"]) == sorted([c.smod.id, c.other.id])
    assert c.owner.call("PUT", c.path(m)).status == 200  # idempotent
    assert c.owner.call("GET", c.path("/moderators")).json()["moderators"].count(c.other.id) == 1
    # the new moderator may now edit the title
    assert c.other.call("PATCH", c.path(), {"title": "By other"}).status == 200
    problem(c.owner.call("PUT", c.path("/moderators/" + "0" * 24)), 404, "user_not_found")
    problem(c.owner.call("PUT", c.path(f"/moderators/{c.owner.id}")), 400, "invalid_request")
    r = c.owner.call("DELETE", c.path(m))
    assert r.status == 200 and r.json()["moderators"] == [c.smod.id], r
    problem(c.owner.call("DELETE", c.path(m)), 404, "not_moderator")
    problem(c.other.call("PATCH", c.path(), {"title": "again"}), 403, "forbidden")


# ---- stream keys and the media hook ----------------------------------------------------------
def test_key_rotation_and_media_hook(srv):
    c = Cast(srv)
    media = "/api/v1/streams/_media"
    problem(c.anon.call("POST", media, {"event": "publish", "stream_key": "sk_nope"}), 404,
            "invalid_stream_key")
    problem(c.anon.call("POST", media, {"event": "play", "stream_key": c.key}), 400,
            "invalid_field", "event")
    problem(c.anon.call("POST", media, {"event": "publish", "stream_key": c.key, "x": 1}), 400,
            "unknown_field", "x")
    problem(c.anon.call("POST", media, {"stream_key": c.key}), 400, "missing_field", "event")
    problem(c.anon.call("POST", media, {"event": "publish"}), 400, "missing_field", "stream_key")
    problem(c.anon.call("POST", media, {"event": "publish", "stream_key": 7}), 400,
            "invalid_field", "stream_key")
    problem(c.anon.call("POST", media, {"event": True, "stream_key": c.key}), 400,
            "invalid_field", "event")
    r = c.anon.call("POST", media, {"event": "publish", "stream_key": c.key})
    assert r.status == 200 and r.json()["stream"]["status"] == "live", r
    assert c.anon.call("POST", media, {"event": "publish", "stream_key": c.key}).status == 200
    for who, status, code in ((c.anon, 401, "unauthorized"), (c.viewer, 403, "forbidden"),
                              (c.other, 403, "forbidden"), (c.smod, 403, "forbidden"),
                              (c.admin, 403, "forbidden")):
        problem(who.call("POST", c.path("/key/rotate")), status, code)
    r = c.owner.call("POST", c.path("/key/rotate"))
    assert r.status == 200, r
    new = r.json()["stream_key"]
    assert new.startswith("sk_") and new != c.key and len(new) == 46
    problem(c.anon.call("POST", media, {"event": "unpublish", "stream_key": c.key}), 404,
            "invalid_stream_key")
    r = c.anon.call("POST", media, {"event": "unpublish", "stream_key": new})
    assert r.status == 200 and r.json()["stream"]["status"] == "ended", r
    r = c.anon.call("POST", media, {"event": "unpublish", "stream_key": new})
    assert r.status == 200 and r.json()["stream"]["status"] == "ended", r
    assert new not in srv.log() and c.key not in srv.log()


# ---- follows -----------------------------------------------------------------------------------
def test_follows(srv):
    a, b, c = Account(srv, "fa"), Account(srv, "fb"), Account(srv, "fc")
    problem(Anon(srv).call("POST", f"/api/v1/users/{a.id}/follow"), 401, "unauthorized")
    problem(a.call("POST", f"/api/v1/users/{a.id}/follow"), 400, "cannot_follow_self")
    problem(a.call("POST", "/api/v1/users/" + "0" * 24 + "/follow"), 404, "user_not_found")
    r = b.call("POST", f"/api/v1/users/{a.id}/follow")
    assert r.status == 201 and r.json()["follower"] == b.id and r.json()["followee"] == a.id, r
    problem(b.call("POST", f"/api/v1/users/{a.id}/follow"), 409, "already_following")
    assert c.call("POST", f"/api/v1/users/{a.id}/follow").status == 201
    assert c.call("POST", f"/api/v1/users/{b.id}/follow").status == 201
    r = Anon(srv).call("GET", f"/api/v1/users/{a.id}/followers")
    assert r.status == 200, r
    assert [f["user"] for f in r.json()["followers"]] == [c.id, b.id]  # newest first
    r = Anon(srv).call("GET", f"/api/v1/users/{a.id}/followers?limit=1")
    page = r.json()
    assert [f["user"] for f in page["followers"]] == [c.id] and page["next"]
    r = Anon(srv).call("GET", f"/api/v1/users/{a.id}/followers?limit=1&after={page['next']}")
    assert [f["user"] for f in r.json()["followers"]] == [b.id]
    r = Anon(srv).call("GET", f"/api/v1/users/{c.id}/following")
    assert sorted(f["user"] for f in r.json()["following"]) == sorted([a.id, b.id])
    problem(Anon(srv).call("GET", f"/api/v1/users/{a.id}/followers?limit=500"), 400,
            "invalid_query")
    r = b.call("DELETE", f"/api/v1/users/{a.id}/follow")
    assert r.status == 204, r
    problem(b.call("DELETE", f"/api/v1/users/{a.id}/follow"), 404, "not_following")
    assert [f["user"] for f in Anon(srv).call(
        "GET", f"/api/v1/users/{a.id}/followers").json()["followers"]] == [c.id]


# ---- reports -----------------------------------------------------------------------------------
def test_reports(srv):
    c = Cast(srv)
    rp = c.path("/report")
    problem(c.anon.call("POST", rp, {"reason": "spam"}), 401, "unauthorized")
    problem(c.viewer.call("POST", rp, {"reason": "boring"}), 400, "invalid_field", "reason")
    problem(c.viewer.call("POST", rp, {"reason": "spam", "text": "x" * 1001}), 400,
            "invalid_field", "text")
    problem(c.viewer.call("POST", rp, {"reason": "spam", "extra": 1}), 400, "unknown_field",
            "extra")
    typo = Account(srv, "typo")  # streams.report allows 10 a minute (bad bodies count)
    problem(typo.call("POST", rp, {}), 400, "missing_field", "reason")
    problem(typo.call("POST", rp, {"text": "no reason"}), 400, "missing_field", "reason")
    problem(typo.call("POST", rp, {"reason": 3}), 400, "invalid_field", "reason")
    problem(typo.call("POST", rp, {"reason": "spam", "text": ["x"]}), 400, "invalid_field",
            "text")
    problem(typo.call("POST", rp, {"reason": "spam", "text": "a\u0001b"}), 400,
            "invalid_field", "text")
    r = c.viewer.call("POST", rp, {"reason": "harassment", "text": "rude"})
    assert r.status == 201, r
    rep = r.json()["report"]
    assert (rep["stream"], rep["reporter"], rep["reason"], rep["status"]) == (
        c.sid, c.viewer.id, "harassment", "open")
    problem(c.viewer.call("POST", rp, {"reason": "spam"}), 409, "already_reported")
    r2 = c.other.call("POST", rp, {"reason": "spam", "text": "x" * 1000})
    assert r2.status == 201, r2
    # the queue: global moderators and admins only (stream moderators are not enough)
    q = f"/api/v1/streams/reports?stream={c.sid}"
    problem(c.anon.call("GET", q), 401, "unauthorized")
    for who in (c.viewer, c.owner, c.other, c.smod):
        problem(who.call("GET", q), 403, "forbidden")
    gmod = Anon(srv, api_token(roles=["moderator"], sub="global-mod"))
    r = gmod.call("GET", q)
    assert r.status == 200, r
    assert [x["id"] for x in r.json()["reports"]] == [rep["id"], r2.json()["report"]["id"]]
    resolve = f"/api/v1/streams/reports/{rep['id']}/resolve"
    problem(c.owner.call("POST", resolve), 403, "forbidden")
    problem(gmod.call("POST", resolve, {"note": "n" * 1001}), 400, "invalid_field", "note")
    # the body is optional (none is {}), but checked when sent
    problem(gmod.call("POST", resolve, {"note": 5}), 400, "invalid_field", "note")
    problem(gmod.call("POST", resolve, {"note": "a\u0001b"}), 400, "invalid_field", "note")
    problem(gmod.call("POST", resolve, {"note": "ok", "notes": "x"}), 400, "unknown_field",
            "notes")
    problem(gmod.call("POST", resolve, "{oops", headers={"Content-Type": "application/json"}),
            400, "invalid_json")
    problem(gmod.call("POST", resolve, "note=warned",
                      headers={"Content-Type": "application/x-www-form-urlencoded"}), 415,
            "unsupported_media_type")
    r = gmod.call("POST", resolve, {"note": "warned"})
    assert r.status == 200, r
    done = r.json()["report"]
    assert (done["status"], done["resolved_by"], done["note"]) == ("resolved", "global-mod",
                                                                    "warned")
    problem(gmod.call("POST", resolve), 409, "report_closed")
    problem(gmod.call("POST", resolve, {"note": None}), 409, "report_closed")
    problem(c.admin.call("POST", f"/api/v1/streams/reports/{rep['id']}/dismiss"), 409,
            "report_closed")
    problem(c.admin.call("POST", "/api/v1/streams/reports/" + "0" * 24 + "/dismiss"), 404,
            "report_not_found")
    r = c.admin.call("POST", f"/api/v1/streams/reports/{r2.json()['report']['id']}/dismiss")
    assert r.status == 200 and r.json()["report"]["status"] == "dismissed", r
    assert c.admin.call("GET", q).json()["reports"] == []  # open only, by default
    r = c.admin.call("GET", q + "&status=resolved")
    assert [x["id"] for x in r.json()["reports"]] == [rep["id"]]
    problem(c.admin.call("GET", q + "&status=weird"), 400, "invalid_query")
    # once closed, the same user may report again
    assert c.viewer.call("POST", rp, {"reason": "spam"}).status == 201


# ---- WebSocket ---------------------------------------------------------------------------------
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


def test_websocket_follow_start_and_viewer_count(srv):
    owner, fan, viewer, stranger = (Account(srv, n) for n in ("wso", "wsf", "wsv", "wss"))
    assert fan.call("POST", f"/api/v1/users/{owner.id}/follow").status == 201
    sid = create(owner, title="WS stream")["stream"]["id"]
    secret = create(owner, title="WS private", visibility="private")["stream"]["id"]
    topic = f"stream.{sid}"

    def hdr(acct):
        return {"Authorization": "Bearer " + acct.token}

    async def scenario():
        async with websockets.connect(srv.ws_url, extra_headers=hdr(fan)) as f, \
                websockets.connect(srv.ws_url) as a, \
                websockets.connect(srv.ws_url, extra_headers=hdr(viewer)) as v, \
                websockets.connect(srv.ws_url, extra_headers=hdr(stranger)) as s:
            F, A, V, S = Client(f), Client(a), Client(v), Client(s)
            # an anonymous watcher before the stream is live: subscribed, not counted yet
            r = await A.call("streams.watch", {"stream_id": sid})
            assert r["type"] == "result" and r["data"]["stream"]["id"] == sid, r
            assert r["data"]["viewer_count"] == 0 and r["data"]["counted"] is False, r
            r = await S.call("streams.watch", {"stream_id": secret})
            assert r["type"] == "error" and r["data"]["code"] == "stream_not_found", r

            # the owner goes live: the follower hears it on its own user topic
            assert owner.call("POST", f"/api/v1/streams/{sid}/start").status == 200
            m = await F.wait(lambda m: m["type"] == "stream.started")
            assert m["topic"] == f"user.{fan.id}" and m["data"]["stream"]["id"] == sid
            assert m["data"]["stream"]["status"] == "live"
            m = await A.wait(lambda m: m["type"] == "stream.started")
            assert m["topic"] == topic
            # ... and the waiting watcher counts from now on
            await A.wait(lambda m: m["type"] == "viewer.count" and m["data"]["count"] == 1)

            # a second watcher changes the count the first one sees
            r = await V.call("streams.watch", {"stream_id": sid})
            assert r["data"]["viewer_count"] == 2, r
            m = await A.wait(lambda m: m["type"] == "viewer.joined" and m["data"]["user"])
            assert m["data"] == {"stream": sid, "user": viewer.id, "anonymous": False}
            await A.wait(lambda m: m["type"] == "viewer.count" and m["data"]["count"] == 2)
            # the owner sees who watches
            r = owner.call("GET", f"/api/v1/streams/{sid}/viewers")
            assert r.json()["users"] == [viewer.id] and r.json()["anonymous"] == 1, r
            r = await V.call("streams.unwatch", {"stream_id": sid})
            assert r["data"] == {"unwatched": True}
            await A.wait(lambda m: m["type"] == "viewer.left")
            await A.wait(lambda m: m["type"] == "viewer.count" and m["data"]["count"] == 1)
            # closing a connection counts as leaving
            await V.call("streams.watch", {"stream_id": sid})
            await A.wait(lambda m: m["type"] == "viewer.count" and m["data"]["count"] == 2)
            await v.close()
            await A.wait(lambda m: m["type"] == "viewer.count" and m["data"]["count"] == 1)
            # updates and the end reach the watcher
            assert owner.call("PATCH", f"/api/v1/streams/{sid}", {"title": "New"}).status == 200
            m = await A.wait(lambda m: m["type"] == "stream.updated")
            assert m["data"]["stream"]["title"] == "New"
            assert owner.call("POST", f"/api/v1/streams/{sid}/end").status == 200
            m = await A.wait(lambda m: m["type"] == "stream.ended")
            assert m["data"]["stream"]["status"] == "ended"
            assert m["data"]["stream"]["peak_viewers"] == 2

    run(scenario())


def revoked(reason):
    return lambda m: m.get("type") == "streams.access_revoked" and m["data"]["reason"] == reason


def is_type(type_):
    return lambda m: m.get("type") == type_


async def hears_nothing_more(cl, sid, pred):
    """cl's next reply comes after everything published before it: nothing matching pred may
    come first. Watching again is that request: refused, as the stream is gone for cl."""
    r = await cl.call("streams.watch", {"stream_id": sid})
    assert r["type"] == "error" and r["data"]["code"] == "stream_not_found", r
    assert not any(pred(m) for m in cl.seen), cl.seen


def test_revoked_access_ends_watches(srv):
    """Watchers of a live public stream: an anonymous connection, a signed-in stranger, two
    viewers who will be allowed and the stream moderator, plus a REST viewer. The stream goes
    private: the anonymous connection, the stranger and the REST viewer lose it at once (told
    with streams.access_revoked, before the change's own stream.updated, and counted out of the
    viewers); then an allowed viewer is taken off the list, then the moderator is removed:
    each is cut off the same way and cannot watch again, while the remaining allowed viewer
    keeps hearing the stream's events."""
    owner, stranger, kept, dropped, smod, rest = (
        Account(srv, n) for n in ("rvo", "rvs", "rvk", "rvd", "rvm", "rvr"))
    sid = create(owner, title="Going private")["stream"]["id"]
    base = f"/api/v1/streams/{sid}"
    assert owner.call("PUT", f"{base}/moderators/{smod.id}").status == 200
    assert owner.call("POST", f"{base}/start").status == 200
    assert rest.call("POST", f"{base}/join").status == 200

    def viewers():
        r = owner.call("GET", f"{base}/viewers")
        assert r.status == 200, r
        return sorted(r.json()["users"]), r.json()["anonymous"]

    def hdr(acct):
        return {"Authorization": "Bearer " + acct.token}

    async def scenario():
        async with websockets.connect(srv.ws_url) as a, \
                websockets.connect(srv.ws_url, extra_headers=hdr(stranger)) as s, \
                websockets.connect(srv.ws_url, extra_headers=hdr(kept)) as k, \
                websockets.connect(srv.ws_url, extra_headers=hdr(dropped)) as d, \
                websockets.connect(srv.ws_url, extra_headers=hdr(smod)) as m:
            A, S, K, D, M = (Client(x) for x in (a, s, k, d, m))
            for cl in (A, S, K, D, M):
                r = await cl.call("streams.watch", {"stream_id": sid})
                assert r["type"] == "result" and r["data"]["counted"], r
            assert viewers() == (sorted([stranger.id, kept.id, dropped.id, smod.id, rest.id]), 1)

            r = owner.call("PATCH", base, {"visibility": "private",
                                           "allowed_viewers": [kept.id, dropped.id]})
            assert r.status == 200, r
            for cl in (A, S):
                ev = await cl.wait(revoked("visibility"))
                assert ev["data"]["stream"] == sid and ev["data"]["detail"], ev
            assert viewers() == (sorted([kept.id, dropped.id, smod.id]), 0)
            for cl in (K, D, M):
                m_ = await cl.wait(is_type("stream.updated"))
                assert m_["data"]["stream"]["visibility"] == "private", m_
            for cl in (A, S):
                await hears_nothing_more(cl, sid, is_type("stream.updated"))
            problem(rest.call("POST", f"{base}/join"), 404, "stream_not_found")

            r = owner.call("PATCH", base, {"allowed_viewers": [kept.id]})
            assert r.status == 200, r
            await D.wait(revoked("allowed_viewers"))
            assert viewers() == (sorted([kept.id, smod.id]), 0)
            for cl in (K, M):
                await cl.wait(is_type("stream.updated"))
            await hears_nothing_more(D, sid, is_type("stream.updated"))

            r = owner.call("DELETE", f"{base}/moderators/{smod.id}")
            assert r.status == 200, r
            await M.wait(revoked("moderators"))
            assert viewers() == ([kept.id], 0)
            await K.wait(is_type("stream.updated"))
            await hears_nothing_more(M, sid, is_type("stream.updated"))
            problem(smod.call("GET", base), 404, "stream_not_found")

            # the allowed viewer goes on: events, and the end of the stream
            assert owner.call("PATCH", base, {"title": "Still on"}).status == 200
            m_ = await K.wait(is_type("stream.updated"))
            assert m_["data"]["stream"]["title"] == "Still on", m_
            assert owner.call("POST", f"{base}/end").status == 200
            await K.wait(is_type("stream.ended"))
            assert not any(x["type"] == "streams.access_revoked" for x in K.seen), K.seen

    run(scenario())


def near(sid, k):
    """The id k away from sid (ObjectIds count up: what an attacker scans)."""
    return "%024x" % ((int(sid, 16) + k) % (1 << 96))


def test_unlisted_streams_are_not_enumerable(srv):
    """Ids are ObjectIds, made one after the other: scanning the ids around a public one
    (anonymously or signed in) must not lead to an unlisted stream, nor may its id alone, on
    any route or message that reads a stream: only its share token (?share= / "share") does.
    The owner, stream moderators, admins and global moderators need none; the token is shown to
    the owner and admins only."""
    owner, stranger, other = Account(srv, "enuo"), Account(srv, "enus"), Account(srv, "enux")
    pub = create(owner, title="Public")["stream"]
    made = create(owner, title="Unlisted", visibility="unlisted")
    hid = made["stream"]["id"]
    foreign = create(other, title="Someone's unlisted", visibility="unlisted")["stream"]
    admin, gmod = Anon(srv, api_token()), Anon(srv, api_token(roles=["moderator"], sub="gmod-1"))
    # the attack: ids around the public one, anonymously and signed in
    found = []
    for k in range(-30, 31):
        for who in (Anon(srv), stranger):
            r = who.call("GET", f"/api/v1/streams/{near(pub['id'], k)}")
            assert r.status in (200, 404), r
            if r.status == 200:  # only public streams (of this test or an earlier one)
                assert r.json()["stream"]["visibility"] == "public", r
                found.append(r.json()["stream"]["id"])
    assert pub["id"] in found and hid not in found and foreign["id"] not in found, found
    if hid[:18] == pub["id"][:18]:  # made in the same second: the scan did reach its id
        assert 0 < int(hid, 16) - int(pub["id"], 16) <= 30
    token = made["stream"]["share_token"]  # the owner's, in the answer to create
    assert token.startswith("sh_") and len(token) >= 25 and token not in (hid, made["stream_key"])
    # the id alone, a wrong token, another stream's token: nothing, on every way in
    wrong = ("", "?share=sh_" + "A" * 22, f"?share={foreign['share_token']}",
             "?share=" + token[:-1], "?share=" + token + "x", "?share=" + "x" * 100)
    base = f"/api/v1/streams/{hid}"
    for q in wrong:
        for who in (Anon(srv), stranger):
            problem(who.call("GET", base + q), 404, "stream_not_found")
            problem(who.call("GET", f"{base}/viewers/count{q}"), 404, "stream_not_found")
        problem(stranger.call("POST", f"{base}/report{q}", {"reason": "spam"}), 404,
                "stream_not_found")
        problem(stranger.call("POST", f"{base}/join{q}"), 404, "stream_not_found")
    r = srv.http("POST", f"/api/v1/whep/{hid}", "v=0\r\n",
                 headers={"Content-Type": "application/sdp"})
    assert r.status == 404 and r.json()["code"] == "not_found", r
    r = srv.http("POST", f"/api/v1/whep/{hid}?share=" + token + "x", "v=0\r\n",
                 headers={"Content-Type": "application/sdp"})
    assert r.status == 404 and r.json()["code"] == "not_found", r
    # with the token WHEP gets past the stream check (the garbage offer is judged next)
    r = srv.http("POST", f"/api/v1/whep/{hid}?share=" + token, "v=0\r\n",
                 headers={"Content-Type": "application/sdp"})
    assert r.status != 404 and r.json()["code"] in ("invalid_sdp", "not_live"), r

    async def ws_refused():
        async with websockets.connect(srv.ws_url) as a:
            A = Client(a)
            for share in (None, "sh_" + "A" * 22, foreign["share_token"]):
                data = {"stream_id": hid}
                if share:
                    data["share"] = share
                r = await A.call("streams.watch", data)
                assert r["type"] == "error" and r["data"]["code"] == "stream_not_found", r
            r = await A.call("streams.watch", {"stream_id": hid, "share": token})
            assert r["type"] == "result" and r["data"]["stream"]["id"] == hid, r
            assert "share_token" not in r["data"]["stream"], r

    run(ws_refused())
    # with the token: anyone reads it (the token itself stays the owner's)
    for who in (Anon(srv), stranger):
        r = who.call("GET", f"{base}?share={token}")
        assert r.status == 200 and r.json()["stream"]["id"] == hid, r
        assert "share_token" not in r.json()["stream"], r
    assert stranger.call("POST", f"{base}/report?share={token}",
                         {"reason": "spam"}).status == 201
    # without: its owner, admins and global moderators (staff reading reports)
    for who in (owner, admin, gmod):
        r = who.call("GET", base)
        assert r.status == 200, (who, r)
    assert owner.call("GET", base).json()["stream"]["share_token"] == token
    assert admin.call("GET", base).json()["stream"]["share_token"] == token
    assert "share_token" not in gmod.call("GET", base).json()["stream"]
    # public streams have a token too, shown to the owner only, and need none
    assert "share_token" not in Anon(srv).call("GET", f"/api/v1/streams/{pub['id']}").json()[
        "stream"]
    # never listed, except to the owner
    r = stranger.call("GET", f"/api/v1/streams?owner={owner.id}")
    assert [x["id"] for x in r.json()["streams"]] == [pub["id"]], r


def test_unlisted_share_token_rotation_ends_what_it_let_in(srv):
    """A public stream made unlisted cuts off those who watch it without the token
    (streams.access_revoked, reason visibility); rotating the token (owner or admin) cuts off
    those who came in with the old one (reason share_token), REST viewers included, while the
    owner keeps watching and the new token lets in."""
    owner, fan, smod = Account(srv, "shro"), Account(srv, "shrf"), Account(srv, "shrm")
    made = create(owner, title="Soon unlisted")
    sid, old = made["stream"]["id"], made["stream"]["share_token"]
    base = f"/api/v1/streams/{sid}"
    assert owner.call("PUT", f"{base}/moderators/{smod.id}").status == 200
    assert owner.call("POST", f"{base}/start").status == 200

    def hdr(acct):
        return {"Authorization": "Bearer " + acct.token}

    async def scenario():
        async with websockets.connect(srv.ws_url) as a, websockets.connect(srv.ws_url) as b, \
                websockets.connect(srv.ws_url, extra_headers=hdr(owner)) as o:
            A, B, O = Client(a), Client(b), Client(o)
            for cl in (A, O):
                r = await cl.call("streams.watch", {"stream_id": sid})
                assert r["type"] == "result", r
            r = owner.call("PATCH", base, {"visibility": "unlisted"})
            assert r.status == 200, r
            await A.wait(revoked("visibility"))
            await hears_nothing_more(A, sid, is_type("stream.updated"))
            # the link: the token lets in, anonymously over WebSocket and signed in over REST
            r = await B.call("streams.watch", {"stream_id": sid, "share": old})
            assert r["type"] == "result", r
            assert fan.call("POST", f"{base}/join?share={old}").status == 200
            r = owner.call("GET", f"{base}/viewers")
            assert fan.id in r.json()["users"] and r.json()["anonymous"] == 1, r
            # only the owner or an admin rotates
            problem(smod.call("POST", f"{base}/share/rotate"), 403, "forbidden")
            problem(fan.call("POST", f"{base}/share/rotate?share={old}"), 403, "forbidden")
            r = owner.call("POST", f"{base}/share/rotate")
            assert r.status == 200, r
            new = r.json()["share_token"]
            assert new != old and new.startswith("sh_") and r.json()["stream"]["share_token"] == new
            ev = await B.wait(revoked("share_token"))
            assert ev["data"]["stream"] == sid, ev
            await hears_nothing_more(B, sid, is_type("stream.updated"))
            r = owner.call("GET", f"{base}/viewers")
            assert r.json()["users"] == [owner.id] and r.json()["anonymous"] == 0, r
            problem(fan.call("GET", f"{base}?share={old}"), 404, "stream_not_found")
            assert fan.call("GET", f"{base}?share={new}").status == 200
            r = await B.call("streams.watch", {"stream_id": sid, "share": new})
            assert r["type"] == "result", r
            r = Anon(srv, api_token()).call("POST", f"{base}/share/rotate")
            assert r.status == 200 and r.json()["share_token"] not in (old, new), r
            await B.wait(revoked("share_token"))
            assert not any(x["type"] == "streams.access_revoked" for x in O.seen), O.seen
        assert owner.call("POST", f"{base}/end").status == 200

    run(scenario())


def test_websocket_data_mistakes(srv):
    """streams.watch and streams.unwatch declare their data: a mistake is an error reply with
    status 400, the code and the member in `field`, and the connection stays open."""
    owner = Account(srv, "wsd")
    sid = create(owner, title="WS data")["stream"]["id"]

    async def scenario():
        async with websockets.connect(srv.ws_url) as a:
            A = Client(a)
            for type_ in ("streams.watch", "streams.unwatch"):
                for data, code in (({}, "missing_field"),
                                   ({"stream_id": 5}, "invalid_field"),
                                   ({"stream_id": None}, "invalid_field"),
                                   ({"stream_id": "zz"}, "invalid_field"),
                                   ({"stream_id": sid.upper()}, "invalid_field"),
                                   ({"stream": sid}, "unknown_field"),
                                   ({"stream_id": sid, "x": 1}, "unknown_field")):
                    r = await A.call(type_, data)
                    assert r["type"] == "error", (type_, data, r)
                    assert r["data"]["status"] == 400 and r["data"]["code"] == code, (type_, r)
                    field = "stream_id" if code != "unknown_field" else next(
                        k for k in data if k != "stream_id")
                    assert r["data"]["field"] == field and r["data"]["detail"], (type_, data, r)
            # well-formed, but no such stream: 404
            r = await A.call("streams.watch", {"stream_id": "0" * 24})
            assert r["type"] == "error" and r["data"]["code"] == "stream_not_found", r
            assert r["data"]["status"] == 404 and "field" not in r["data"], r
            # still open and serving
            r = await A.call("streams.watch", {"stream_id": sid})
            assert r["type"] == "result" and r["data"]["stream"]["id"] == sid, r
            r = await A.call("streams.unwatch", {"stream_id": sid})
            assert r["data"] == {"unwatched": True}, r

    run(scenario())


def test_private_stream_start_notifies_allowed_followers_only(srv):
    owner, allowed, other = (Account(srv, n) for n in ("pno", "pna", "pnx"))
    for f in (allowed, other):
        assert f.call("POST", f"/api/v1/users/{owner.id}/follow").status == 201
    sid = create(owner, title="Private live", visibility="private",
                 allowed_viewers=[allowed.id])["stream"]["id"]
    pub = create(owner, title="Public live")["stream"]["id"]

    async def scenario():
        async with websockets.connect(
                srv.ws_url, extra_headers={"Authorization": "Bearer " + allowed.token}) as a, \
                websockets.connect(
                    srv.ws_url, extra_headers={"Authorization": "Bearer " + other.token}) as o:
            A, O = Client(a), Client(o)
            await A.call("streams.unwatch", {"stream_id": sid})  # connection is ready
            await O.call("streams.unwatch", {"stream_id": sid})
            assert owner.call("POST", f"/api/v1/streams/{sid}/start").status == 200
            m = await A.wait(lambda m: m["type"] == "stream.started")
            assert m["data"]["stream"]["id"] == sid
            assert owner.call("POST", f"/api/v1/streams/{sid}/end").status == 200
            # the public one reaches both; the other follower never heard of the private one
            assert owner.call("POST", f"/api/v1/streams/{pub}/start").status == 200
            m = await O.wait(lambda m: m["type"] == "stream.started")
            assert m["data"]["stream"]["id"] == pub
            assert not any(x["type"] == "stream.started" for x in O.seen)
            await A.wait(lambda m: m["type"] == "stream.started"
                         and m["data"]["stream"]["id"] == pub)
            assert owner.call("POST", f"/api/v1/streams/{pub}/end").status == 200

    run(scenario())


# ---- platform bans (with the moderation plugin) ------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_platform_banned_user_creates_starts_publishes_reports_follows_nothing(request, backend):
    """A user banned from the platform is refused 403 banned when she creates or starts a
    stream, publishes it (the media test route by key, WHIP by key and by token: checked
    before the offer is read), reports or follows; the ban is asked at the moment of the
    action, and lifting it restores everything at once."""
    plugins = {"streams": streams_plugin(),
               "moderation": {"path": os.path.join(PLUGIN_DIR, "moderation.so")}}
    s = Server(plugins=plugins, core=core(storage_for(request, backend))).start()
    try:
        owner, fan = Account(s, "pbo"), Account(s, "pbf")
        made = create(owner, title="Before the ban")
        sid, key = made["stream"]["id"], made["stream_key"]
        other = create(fan, title="Someone else's")["stream"]["id"]
        admin = Anon(s, api_token())
        r = admin.call("POST", "/api/v1/moderation/bans", {"user": owner.id})
        assert r.status == 201, r
        offer = "v=0\r\n"  # never read: the right is checked first
        b = problem(owner.call("POST", "/api/v1/streams", {"title": "After"}), 403, "banned")
        assert "platform" in b["detail"], b
        problem(owner.call("POST", f"/api/v1/streams/{sid}/start"), 403, "banned")
        problem(owner.call("POST", "/api/v1/streams/_media",
                           {"event": "publish", "stream_key": key}), 403, "banned")
        for tok in (key, owner.token):
            problem(s.http("POST", f"/api/v1/whip/{sid}", offer, token=tok,
                           headers={"Content-Type": "application/sdp"}), 403, "banned")
        problem(owner.call("POST", f"/api/v1/streams/{other}/report", {"reason": "spam"}), 403,
                "banned")
        problem(owner.call("POST", f"/api/v1/users/{fan.id}/follow"), 403, "banned")
        # nothing was made, nothing went live; watching a public stream stays allowed
        assert owner.call("GET", f"/api/v1/streams/{sid}").json()["stream"]["status"] == "created"
        r = owner.call("GET", f"/api/v1/streams?owner={owner.id}")
        assert [x["id"] for x in r.json()["streams"]] == [sid], r
        assert owner.call("GET", f"/api/v1/streams/{other}").status == 200
        # others are not concerned
        assert fan.call("POST", f"/api/v1/streams/{sid}/report", {"reason": "spam"}).status == 201
        assert fan.call("POST", f"/api/v1/users/{owner.id}/follow").status == 201
        # the unban restores it all
        assert admin.call("DELETE", f"/api/v1/moderation/bans/{owner.id}").status == 200
        assert owner.call("POST", "/api/v1/streams", {"title": "After"}).status == 201
        assert owner.call("POST", f"/api/v1/streams/{sid}/start").status == 200
        assert owner.call("POST", f"/api/v1/users/{fan.id}/follow").status == 201
        assert owner.call("POST", f"/api/v1/streams/{other}/report",
                          {"reason": "spam"}).status == 201
    finally:
        try:
            assert s.stop() == 0
        finally:
            s.kill()


# ---- service streams.access (ABI 1.3), called through the test plugin hooktest ---------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_access_service(request, backend):
    if backend == "mongodb":
        storage = storage_config("mongodb", uri=request.getfixturevalue("congo").uri,
                                 database=unique_db())
    else:
        storage = {"backend": "sqlite"}
    # hooktest does not depend on streams: it calls the service after startup
    s = Server(plugins={"streams": streams_plugin(), "hooktest": {}}, core=core(storage)).start()
    try:
        c = Cast(s)
        gmod = Account(s, "gmod", roles=["moderator"])
        secret = create(c.owner, title="Secret", visibility="private",
                        allowed_viewers=[c.viewer.id])["stream"]["id"]

        def access(stream, user=None, **kw):
            body = {"stream": stream, "user": user}
            body.update(kw)
            r = s.http("POST", "/api/v1/hooktest/access", body)
            assert r.status == 200, r
            return r.json()

        def ok(stream, user=None, **kw):
            out = access(stream, user, **kw)
            assert out["status"] == 0, out
            return out["result"]

        r = ok(c.sid)  # anonymous, public stream
        assert r["found"] and r["visible"] and r["status"] == "created", r
        assert r["owner"] == c.owner.id and not r["is_owner"] and not r["is_moderator"]
        assert r["settings"]["chat_slow_mode_s"] == 0 and "max_viewers" in r["settings"], r
        r = ok(c.sid, c.owner.id)
        assert r["is_owner"] and not r["is_moderator"], r
        assert ok(c.sid, c.smod.id)["is_moderator"]  # stream moderator
        assert not ok(c.sid, c.other.id)["is_moderator"]
        # global moderator: from the account's roles, or from the roles given
        assert ok(c.sid, gmod.id)["is_moderator"]
        assert ok(c.sid, c.other.id, roles=["moderator"])["is_moderator"]
        assert not ok(c.sid, gmod.id, roles=["viewer"])["is_moderator"]  # given roles win

        # private: found, but visible only to owner, moderators, allowed viewers and admins
        r = ok(secret, c.other.id)
        assert r["found"] and not r["visible"], r
        assert not ok(secret)["visible"]  # anonymous
        assert ok(secret, c.viewer.id)["visible"]
        assert ok(secret, c.owner.id)["visible"]
        r = ok(secret, "backend-admin", roles=["admin"])
        assert r["visible"] and r["is_moderator"] and not r["is_owner"], r
        assert not ok(secret, c.smod.id)["visible"]  # moderator of another stream only

        # live status is current
        assert c.owner.call("POST", c.path("/start")).status == 200
        assert ok(c.sid)["status"] == "live"

        # no such stream
        assert ok("0123456789abcdef01234567") == {"found": False, "visible": False}
        assert ok("zz") == {"found": False, "visible": False}
        # bad arguments: ONAIR_EINVAL
        assert access(c.sid, roles="admin")["status"] == -1
        assert access(c.sid, user=5)["status"] == -1
        assert s.http("GET", c.path()).status == 200  # still serving
    finally:
        try:
            assert s.stop() == 0
        finally:
            s.kill()
