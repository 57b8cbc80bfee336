"""Who owns a stream, against a real onaird (streams + chat), on both storage backends.

A stream belongs to an existing account: going live (WHIP by stream key or by token) judges
the owner's account as it is then, followers follow accounts, stream moderators are
accounts. An API-key token (auth.api_keys) whose subject is no account (the backend itself,
or one of the backend's own users) used to create streams owned by that subject, and WHIP
then refused every publish of them (403 "the stream's owner account does not exist"). Now
such a create is refused with 422 owner_required, and an admin (the backend's token with the
streamer and admin roles) names the account with `owner`; that stream works end to end: WHIP
by key takes it live, two anonymous viewers in its chat both receive what its owner sends."""
import os
import urllib.parse

import pytest
import websockets

from onair_harness import PLUGIN_DIR, Server
from store_support import storage_config, unique_db
from test_media import offer, post_sdp
from test_streams import (BACKENDS, Account, Anon, Client, api_token, congo, core,  # noqa: F401
                          problem, run, streams_plugin)

BACKEND = ("streamer", "admin")  # a backend's token that creates streams for its users


@pytest.fixture(scope="module", params=BACKENDS)
def srv(request):
    if request.param == "mongodb":
        backend = storage_config("mongodb", uri=request.getfixturevalue("congo").uri,
                                 database=unique_db())
    else:
        backend = {"backend": "sqlite"}
    c = core(backend)
    c["media"] = {"connect_timeout": 60}  # the WHIP session here never connects: keep it
    plugins = {"streams": streams_plugin(),
               "chat": {"path": os.path.join(PLUGIN_DIR, "chat.so")}}
    s = Server(plugins=plugins, core=c).start()
    yield s
    try:
        assert s.stop() == 0
    finally:
        s.kill()


def owned_by(srv, who):
    r = srv.http("GET", "/api/v1/streams?owner=" + urllib.parse.quote(who))
    assert r.status == 200, r
    return r.json()["streams"]


def test_no_account_no_stream(srv):
    """A token whose subject is no account creates nothing without owner."""
    for sub, roles in (("ext-user-7", ("streamer",)), ("backend-admin", BACKEND)):
        tok = Anon(srv, api_token(roles=roles, sub=sub))
        body = problem(tok.call("POST", "/api/v1/streams", {"title": "Nobody's"}), 422,
                       "owner_required")
        assert "owner" in body["detail"] and "field" not in body, body
        assert owned_by(srv, sub) == []


def test_owner_mistakes(srv):
    backend = Anon(srv, api_token(roles=BACKEND))
    ada, bob = Account(srv, "ada"), Account(srv, "bob")
    create = "/api/v1/streams"
    problem(backend.call("POST", create, {"title": "x", "owner": "0123456789abcdef01234567"}),
            422, "owner_not_found", "owner")
    for bad in ("ext-user-7", "", 5, None, "0123456789ABCDEF01234567"):
        problem(backend.call("POST", create, {"title": "x", "owner": bad}), 400, "invalid_field",
                "owner")
    # the body is checked first: a bad owner of a body without a title is a missing title
    problem(backend.call("POST", create, {"owner": ada.id}), 400, "missing_field", "title")
    # a streamer who is no admin names no other account; naming herself is as without owner
    problem(ada.call("POST", create, {"title": "Bob's", "owner": bob.id}), 403, "forbidden",
            "owner")
    r = ada.call("POST", create, {"title": "Mine", "owner": ada.id})
    assert r.status == 201 and r.json()["stream"]["owner"] == ada.id, r
    # an admin without the streamer role creates no stream at all (the route's role)
    problem(Anon(srv, api_token()).call("POST", create, {"title": "x", "owner": ada.id}), 403,
            "forbidden")
    # a disabled account owns no new stream
    r = srv.http("PATCH", f"/api/v1/admin/users/{bob.id}", {"disabled": True}, token=api_token())
    assert r.status == 200, r
    problem(backend.call("POST", create, {"title": "x", "owner": bob.id}), 422, "owner_disabled",
            "owner")
    assert owned_by(srv, bob.id) == []


def test_api_key_token_of_an_account(srv):
    """A backend that mints a token for one of onair's accounts (sub = the account id) creates
    and publishes that account's streams, as the account itself does."""
    acct = Account(srv, "minted")
    tok = Anon(srv, api_token(roles=("streamer",), sub=acct.id))
    r = tok.call("POST", "/api/v1/streams", {"title": "Minted"})
    assert r.status == 201 and r.json()["stream"]["owner"] == acct.id, r
    sid = r.json()["stream"]["id"]
    r = post_sdp(srv, f"/api/v1/whip/{sid}", offer(), token=tok.token)
    assert r.status == 201, r
    assert acct.call("GET", f"/api/v1/streams/{sid}").json()["stream"]["status"] == "live"
    assert srv.http("DELETE", r.header("Location"), token=tok.token).status in (200, 204)


def test_stream_made_for_an_account_works(srv):
    """The backend creates a stream for an account: WHIP by its key takes it live, its owner
    acts on it, and chat reaches every viewer."""
    owner = Account(srv, "owner")
    backend = Anon(srv, api_token(roles=BACKEND))
    r = backend.call("POST", "/api/v1/streams", {"title": "For an account", "owner": owner.id})
    assert r.status == 201, r
    made = r.json()
    sid, key = made["stream"]["id"], made["stream_key"]
    assert made["stream"]["owner"] == owner.id
    assert [s["id"] for s in owned_by(srv, owner.id)] == [sid]
    assert owned_by(srv, "backend-admin") == []
    # the owner sees it as hers (share token) and changes it
    r = owner.call("PATCH", f"/api/v1/streams/{sid}", {"title": "Renamed"})
    assert r.status == 200 and r.json()["stream"]["share_token"], r
    # WHIP with the stream key: the stream goes live (it was refused before: no account)
    r = post_sdp(srv, f"/api/v1/whip/{sid}", offer(), token=key)
    assert r.status == 201, r
    session = r.header("Location")
    assert owner.call("GET", f"/api/v1/streams/{sid}").json()["stream"]["status"] == "live"

    async def chat():
        hdr = {"Authorization": "Bearer " + owner.token}
        async with websockets.connect(srv.ws_url) as a, websockets.connect(srv.ws_url) as b, \
                websockets.connect(srv.ws_url, extra_headers=hdr) as o:
            va, vb, vo = Client(a), Client(b), Client(o)
            for c in (va, vb, vo):
                r = await c.call("chat.join", {"stream_id": sid})
                assert r["type"] == "result", r
            r = await vo.call("chat.send", {"stream_id": sid, "text": "hello from the owner"})
            assert r["type"] == "result", r
            for c in (va, vb):
                m = await c.wait(lambda m: m.get("type") == "chat.message")
                assert m["data"]["text"] == "hello from the owner", m
                assert m["data"]["user"] == owner.id, m

    run(chat())
    assert srv.http("DELETE", session, token=key).status in (200, 204)
