"""Co-hosts plugin against a real onaird with the streams and moderation plugins, on both storage
backends (sqlite and CongoDB for mongodb): who may invite whom (owner only, not oneself, not a
banned user, not twice, the per-stream limit), accept / decline / revoke and what each does to the
others, an invite that expires (refused on accept, marked expired by the durable sweep, also
after a restart), and the relay side: a co-host's WHIP (?role=cohost, own token) is refused
before the accept and after removal, works after the accept, a WHEP player picks the co-host
with ?participant=, and removing the co-host ends their publishing and their players at once
while the main host's stream goes on. A second WebSocket client on the stream sees the events."""
import asyncio
import base64
import json
import os
import re
import threading
import time

import pytest
import websockets

from onair_harness import PLUGIN_DIR, Server
from store_support import Congo, storage_config, unique_db
from test_media import offer

BACKENDS = ["sqlite", "mongodb"]
PW = "correct horse battery staple"
TTL_S = 2


def plugins(ttl=600):
    return {"streams": {"path": os.path.join(PLUGIN_DIR, "streams.so"),
                        "config": {"max_live_per_user": 10}},
            "moderation": {"path": os.path.join(PLUGIN_DIR, "moderation.so")},
            "cohosts": {"path": os.path.join(PLUGIN_DIR, "cohosts.so"),
                        "config": {"max_cohosts": 2, "invite_ttl_s": ttl, "sweep_ms": 200}}}


def core(backend):
    return {"auth": {"password_hash": "interactive"}, "storage": backend,
            "rate_limits": {"cohosts.invite": "100000/1m", "media.offer": "100000/1m"},
            "media": {"connect_timeout": 20}}


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
    yield s
    try:
        assert s.stop() == 0
    finally:
        s.kill()


@pytest.fixture(params=BACKENDS)
def backend(request):
    return backend_config(request, request.param)


def claims(token):
    p = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


class Account:
    def __init__(self, srv, name):
        self.srv = srv
        u = name + base64.b32encode(os.urandom(5)).decode().lower()
        r = srv.http("POST", "/api/v1/auth/register",
                     {"username": u, "email": u + "@example.org", "password": PW})
        assert r.status == 201, r
        self.token = r.json()["access_token"]
        self.id = claims(self.token)["sub"]

    def call(self, method, path, body=None, **kw):
        return self.srv.http(method, path, body, token=self.token, **kw)


def problem(r, status, code, field=None):
    assert r.status == status, f"want {status} {code}, got {r!r}"
    assert (r.header("Content-Type") or "").startswith("application/problem+json"), r
    body = r.json()
    assert body["code"] == code, body
    assert body.get("detail"), body
    assert body.get("field") == field, body
    return body


def live_stream(owner):
    r = owner.call("POST", "/api/v1/streams", {"title": "Panel"})
    assert r.status == 201, r
    sid, key = r.json()["stream"]["id"], r.json()["stream_key"]
    r = post_sdp(owner.srv, f"/api/v1/whip/{sid}", offer(), token=key)
    assert r.status == 201, r
    return sid, key, r.header("Location")


def post_sdp(srv, path, sdp, token=None):
    return srv.http("POST", path, sdp, headers={"Content-Type": "application/sdp"}, token=token)


def invite(owner, sid, user):
    return owner.call("POST", f"/api/v1/streams/{sid}/cohosts/invite", {"user_id": user.id})


def invited(owner, sid, user):
    r = invite(owner, sid, user)
    assert r.status == 201, r
    inv = r.json()["invite"]
    assert inv["status"] == "pending" and inv["user_id"] == user.id and inv["stream"] == sid
    return inv["id"]


def cohosts(srv, sid):
    r = srv.http("GET", f"/api/v1/streams/{sid}/cohosts")
    assert r.status == 200, r
    return {c["user_id"]: c for c in r.json()["cohosts"]}


def test_invite_rules(srv):
    owner, guest, other = Account(srv, "owner"), Account(srv, "guest"), Account(srv, "other")
    sid, _, _ = live_stream(owner)
    problem(invite(guest, sid, other), 403, "forbidden")  # not the owner
    problem(owner.call("POST", f"/api/v1/streams/{sid}/cohosts/invite", {"user_id": owner.id}),
            400, "invalid_field", "user_id")  # oneself
    problem(owner.call("POST", f"/api/v1/streams/{sid}/cohosts/invite", {"user_id": "nope"}),
            400, "invalid_field", "user_id")
    problem(owner.call("POST", f"/api/v1/streams/{sid}/cohosts/invite", {}),
            400, "missing_field", "user_id")
    problem(owner.call("POST", f"/api/v1/streams/{sid}/cohosts/invite",
                       {"user_id": "0123456789abcdef01234567"}), 400, "user_not_found", "user_id")
    problem(owner.call("POST", "/api/v1/streams/0123456789abcdef01234567/cohosts/invite",
                       {"user_id": guest.id}), 404, "stream_not_found")
    problem(srv.http("POST", f"/api/v1/streams/{sid}/cohosts/invite", {"user_id": guest.id}),
            401, "unauthorized")
    iid = invited(owner, sid, guest)
    problem(invite(owner, sid, guest), 409, "already_invited")
    # the invitee sees it; nobody else does
    r = guest.call("GET", "/api/v1/cohosts/invites")
    assert [i["id"] for i in r.json()["invites"]] == [iid], r
    assert other.call("GET", "/api/v1/cohosts/invites").json()["invites"] == []
    # only the invitee answers, only the owner revokes
    problem(other.call("POST", f"/api/v1/cohosts/invites/{iid}/accept"), 404, "invite_not_found")
    problem(guest.call("DELETE", f"/api/v1/cohosts/invites/{iid}"), 404, "invite_not_found")
    # max_cohosts: 2 places, pending invites included
    third = Account(srv, "third")
    invited(owner, sid, other)
    problem(invite(owner, sid, third), 409, "cohost_limit")
    r = owner.call("DELETE", f"/api/v1/cohosts/invites/{iid}")
    assert r.status == 200 and r.json()["invite"]["status"] == "revoked", r
    problem(guest.call("POST", f"/api/v1/cohosts/invites/{iid}/accept"), 409, "invite_revoked")
    problem(owner.call("DELETE", f"/api/v1/cohosts/invites/{iid}"), 409, "invite_revoked")
    # the revoked place is free again
    invited(owner, sid, third)


def test_banned_user_cannot_be_invited(srv):
    owner, guest = Account(srv, "owner"), Account(srv, "banned")
    sid, _, _ = live_stream(owner)
    r = owner.call("POST", f"/api/v1/streams/{sid}/moderation/bans", {"user": guest.id})
    assert r.status in (200, 201), r
    problem(invite(owner, sid, guest), 403, "user_banned")


def test_accept_decline_and_events(srv):
    owner, guest, nope, watcher = (Account(srv, n) for n in ("owner", "guest", "nope", "watcher"))
    sid, _, _ = live_stream(owner)

    async def go():
        async with websockets.connect(srv.ws_url) as ws:
            await ws.send(json.dumps({"type": "streams.watch", "id": "w",
                                      "data": {"stream_id": sid}}))
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if m.get("id") == "w":
                    assert m["type"] == "result", m
                    break
            iid = invited(owner, sid, guest)
            r = guest.call("POST", f"/api/v1/cohosts/invites/{iid}/accept")
            assert r.status == 200 and r.json()["invite"]["status"] == "accepted", r
            problem(guest.call("POST", f"/api/v1/cohosts/invites/{iid}/accept"), 409,
                    "invite_not_pending")
            problem(guest.call("POST", f"/api/v1/cohosts/invites/{iid}/decline"), 409,
                    "invite_not_pending")
            problem(invite(owner, sid, guest), 409, "already_cohost")
            iid2 = invited(owner, sid, nope)
            r = nope.call("POST", f"/api/v1/cohosts/invites/{iid2}/decline")
            assert r.status == 200 and r.json()["invite"]["status"] == "declined", r
            problem(nope.call("POST", f"/api/v1/cohosts/invites/{iid2}/accept"), 409,
                    "invite_not_pending")
            got = []
            while not any(m.get("type") == "cohost.accepted" for m in got):
                got.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            ev = [m for m in got if m.get("type") == "cohost.accepted"][0]["data"]
            assert ev["stream"] == sid and ev["user_id"] == guest.id and ev["invite_id"] == iid
            # invites themselves never reach the stream's watchers
            assert not any(m.get("type") == "cohost.invited" for m in got), got
    asyncio.run(asyncio.wait_for(go(), 60))
    c = cohosts(srv, sid)
    assert list(c) == [guest.id] and c[guest.id]["on_air"] is False, c


def test_cohost_publishing_and_removal(srv):
    owner, guest, stranger, mod = (Account(srv, n) for n in ("owner", "guest", "stranger", "mod"))
    sid, key, host_loc = live_stream(owner)
    whip = f"/api/v1/whip/{sid}?role=cohost"
    # not a co-host yet: refused, the stream untouched
    problem(post_sdp(srv, whip, offer(), token=guest.token), 403, "not_cohost")
    problem(post_sdp(srv, whip, offer(), token=key), 401, "invalid_token")  # a stream key
    problem(post_sdp(srv, whip, offer()), 401, "unauthorized")
    problem(post_sdp(srv, f"/api/v1/whep/{sid}?participant={guest.id}",
                     offer(direction="recvonly")), 409, "not_publishing")
    problem(post_sdp(srv, f"/api/v1/whep/{sid}?participant=bad/id", offer(direction="recvonly")),
            400, "invalid_request")
    iid = invited(owner, sid, guest)
    assert guest.call("POST", f"/api/v1/cohosts/invites/{iid}/accept").status == 200
    r = post_sdp(srv, whip, offer(), token=guest.token)
    assert r.status == 201, r
    guest_loc = r.header("Location")
    assert "a=recvonly" in r.body
    assert cohosts(srv, sid)[guest.id]["on_air"] is True
    # players: the main host as before, the co-host with ?participant=
    main = post_sdp(srv, f"/api/v1/whep/{sid}", offer(direction="recvonly", ufrag="v1"))
    assert main.status == 201, main
    side = post_sdp(srv, f"/api/v1/whep/{sid}?participant={guest.id}",
                    offer(direction="recvonly", ufrag="v2"))
    assert side.status == 201, side
    # the co-host's own resource is theirs
    problem(srv.http("DELETE", guest_loc, token=stranger.token), 403, "forbidden")
    # a stranger cannot remove the co-host
    problem(stranger.call("DELETE", f"/api/v1/streams/{sid}/cohosts/{guest.id}"), 403, "forbidden")
    problem(owner.call("DELETE", f"/api/v1/streams/{sid}/cohosts/{stranger.id}"), 404,
            "cohost_not_found")
    r = owner.call("DELETE", f"/api/v1/streams/{sid}/cohosts/{guest.id}")
    assert r.status == 200 and r.json()["cohost"]["status"] == "removed", r
    # at once: the co-host's publish and players are gone, the main host's are not
    deadline = time.time() + 5
    while srv.http("DELETE", guest_loc, token=guest.token).status != 404:
        assert time.time() < deadline, "the removed co-host still publishes"
        time.sleep(0.05)
    problem(srv.http("DELETE", side.header("Location")), 404, "not_found")
    problem(post_sdp(srv, f"/api/v1/whep/{sid}?participant={guest.id}",
                     offer(direction="recvonly", ufrag="v3")), 409, "not_publishing")
    problem(post_sdp(srv, whip, offer(), token=guest.token), 403, "not_cohost")
    r = srv.http("GET", f"/api/v1/streams/{sid}", token=owner.token)
    assert r.json()["stream"]["status"] == "live", r
    assert srv.http("DELETE", main.header("Location")).status == 200
    assert cohosts(srv, sid) == {}
    # a co-host may leave; the owner's end of the stream ends a co-host's publishing too
    iid = invited(owner, sid, mod)
    assert mod.call("POST", f"/api/v1/cohosts/invites/{iid}/accept").status == 200
    r = post_sdp(srv, whip, offer(), token=mod.token)
    assert r.status == 201, r
    mod_loc = r.header("Location")
    assert srv.http("DELETE", host_loc, token=key).status == 200
    deadline = time.time() + 5
    while srv.http("DELETE", mod_loc, token=mod.token).status != 404:
        assert time.time() < deadline, "the co-host outlived the stream"
        time.sleep(0.05)
    r = mod.call("DELETE", f"/api/v1/streams/{sid}/cohosts/{mod.id}")
    assert r.status == 200 and r.json()["cohost"]["status"] == "left", r
    # not live: no co-host publishing
    iid = invited(owner, sid, guest)
    assert guest.call("POST", f"/api/v1/cohosts/invites/{iid}/accept").status == 200
    problem(post_sdp(srv, whip, offer(), token=guest.token), 409, "not_live")


def test_invites_expire_durably(backend):
    s = Server(plugins=plugins(ttl=TTL_S), core=core(backend)).start()
    try:
        owner, a, b = Account(s, "owner"), Account(s, "a"), Account(s, "b")
        r = owner.call("POST", "/api/v1/streams", {"title": "Later"})
        sid = r.json()["stream"]["id"]
        ia, ib = invited(owner, sid, a), invited(owner, sid, b)
        assert s.stop() == 0
        time.sleep(TTL_S + 0.5)  # due while no server runs
        s.start()
        # overdue: never accepted, whatever the sweep did yet
        problem(a.call("POST", f"/api/v1/cohosts/invites/{ia}/accept"), 409, "invite_expired")
        # and the sweep marks it (once) on start: the invitee no longer lists it
        assert b.call("GET", "/api/v1/cohosts/invites").json()["invites"] == []
        deadline = time.time() + 10
        while owner.call("GET", f"/api/v1/cohosts/invites/{ib}").json()["invite"]["status"] \
                != "expired":
            assert time.time() < deadline, "the sweep did not expire the invite"
            time.sleep(0.1)
        r = b.call("GET", f"/api/v1/cohosts/invites/{ib}")
        assert r.status == 200 and r.json()["invite"]["status"] == "expired", r
        problem(Account(s, "x").call("GET", f"/api/v1/cohosts/invites/{ib}"), 404,
                "invite_not_found")
        problem(owner.call("DELETE", f"/api/v1/cohosts/invites/{ib}"), 409, "invite_expired")
        # places held by expired invites are free
        invited(owner, sid, a)
        invited(owner, sid, b)
        assert s.stop() == 0
    finally:
        s.kill()


def test_mute_rules(srv):
    owner, guest, stranger = (Account(srv, n) for n in ("owner", "guest", "stranger"))
    sid, _, _ = live_stream(owner)
    mute = f"/api/v1/streams/{sid}/cohosts/{guest.id}/mute"
    problem(owner.call("POST", mute, {"audio": True}), 404, "cohost_not_found")
    iid = invited(owner, sid, guest)
    assert guest.call("POST", f"/api/v1/cohosts/invites/{iid}/accept").status == 200
    problem(stranger.call("POST", mute, {"audio": True}), 403, "forbidden")
    problem(guest.call("POST", mute, {"audio": False}), 403, "forbidden")  # not their own call
    problem(owner.call("POST", mute, {}), 400, "missing_field", "audio")
    problem(owner.call("POST", mute, {"audio": "yes"}), 400, "invalid_field", "audio")
    problem(owner.call("POST", mute, {"loud": True}), 400, "unknown_field", "loud")
    r = owner.call("POST", mute, {"audio": True})
    assert r.status == 200 and r.json()["cohost"]["muted"] == {"audio": True, "video": False}, r
    # a publish after the mute is muted too (the relay reads it from the plugin), and allowed
    r = post_sdp(srv, f"/api/v1/whip/{sid}?role=cohost", offer(), token=guest.token)
    assert r.status == 201, r
    r = owner.call("POST", mute, {"video": True, "audio": False})
    assert r.json()["cohost"]["muted"] == {"audio": False, "video": True}, r
    c = cohosts(srv, sid)[guest.id]
    assert c["muted"] == {"audio": False, "video": True} and c["on_air"] is True, c
    assert owner.call("DELETE", f"/api/v1/streams/{sid}/cohosts/{guest.id}").status == 200


def test_accepts_race_for_the_last_place(backend):
    """Accepts fired at once for one place: exactly one 200, the others 409 cohost_limit
    (places are taken with one conditional store update). Four invites are made while
    max_cohosts is 4, then the server restarts with 1."""
    p = plugins()
    p["cohosts"]["config"]["max_cohosts"] = 4
    s = Server(plugins=p, core=core(backend)).start()
    try:
        owner = Account(s, "owner")
        guests = [Account(s, f"g{i}") for i in range(4)]
        r = owner.call("POST", "/api/v1/streams", {"title": "One seat"})
        assert r.status == 201, r
        sid = r.json()["stream"]["id"]
        ids = [invited(owner, sid, g) for g in guests]
        assert s.stop() == 0
        s.plugins["cohosts"]["config"]["max_cohosts"] = 1
        s.write_config()
        s.start()
        go = threading.Barrier(len(guests))
        answers = [None] * len(guests)

        def accept(i):
            go.wait()
            answers[i] = guests[i].call("POST", f"/api/v1/cohosts/invites/{ids[i]}/accept")

        threads = [threading.Thread(target=accept, args=(i,)) for i in range(len(guests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [i for i, a in enumerate(answers) if a.status == 200]
        assert len(won) == 1, answers
        for i, a in enumerate(answers):
            if i not in won:
                assert problem(a, 409, "cohost_limit")["max_cohosts"] == 1
        assert list(cohosts(s, sid)) == [guests[won[0]].id]
        statuses = [owner.call("GET", f"/api/v1/cohosts/invites/{x}").json()["invite"]["status"]
                    for x in ids]
        assert sorted(statuses) == ["accepted", "pending", "pending", "pending"], statuses
        # the winner leaves: the place is free again, and one more accept takes it
        r = guests[won[0]].call("DELETE", f"/api/v1/streams/{sid}/cohosts/{guests[won[0]].id}")
        assert r.status == 200 and r.json()["cohost"]["status"] == "left", r
        nxt = next(i for i in range(len(guests)) if i not in won)
        r = guests[nxt].call("POST", f"/api/v1/cohosts/invites/{ids[nxt]}/accept")
        assert r.status == 200, r
        last = next(i for i in range(len(guests)) if i not in won and i != nxt)
        problem(guests[last].call("POST", f"/api/v1/cohosts/invites/{ids[last]}/accept"), 409,
                "cohost_limit")
        assert list(cohosts(s, sid)) == [guests[nxt].id]
        assert s.stop() == 0
    finally:
        s.kill()


def test_speaker_settings(backend):
    """The active speaker keys: applied to the relay's detector at start (the daemon says so),
    and an out-of-range value is refused at load with the file, line and key named (here the
    daemon does not start: its rate_limits name the plugin's limit)."""
    p = plugins()
    p["cohosts"]["config"].update(speaker_threshold=55, speaker_hold_ms=1200,
                                  speaker_interval_ms=0)
    s = Server(plugins=p, core=core(backend)).start()
    try:
        assert s.wait_log(r"active speaker: threshold 55, hold 1200 ms, interval 0 ms"), s.log()
        assert s.stop() == 0
        for key, bad, why in (("speaker_threshold", 0, "below the minimum 1"),
                              ("speaker_threshold", 128, "above the maximum 127"),
                              ("speaker_hold_ms", -5, "below the minimum 0"),
                              ("speaker_interval_ms", 60001, "above the maximum 60000")):
            s.plugins = plugins()
            s.plugins["cohosts"]["config"][key] = bad
            s.write_config()
            s.start(wait=False)
            assert s.proc.wait(30) != 0
            s._reader.join(5)
            assert re.search(rf"cohosts\.yaml:\d+:\d+: {key}: {bad} is {why}", s.log()), s.log()
    finally:
        s.kill()
