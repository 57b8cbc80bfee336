"""calls plugin: ringing over onair's WebSocket against a real onaird, on both storage backends
(sqlite and CongoDB for mongodb). Two verified users on their own WebSocket connections (the
callee with two): calls.ring -> calls.ringing on the callee's sockets; accept -> the caller gets
calls.accepted and the callee's other socket calls.answered_elsewhere; decline; cancel; no answer
within ring_timeout_s -> both get calls.missed; refusals (unverified, oneself, a second ringing
call, bad ids, someone else's call); a call ringing when the server restarts ends as missed once."""
import asyncio
import json
import os

import pytest
import websockets

from onair_harness import PLUGIN_DIR, Server, make_token
from store_support import Congo, storage_config, unique_db

BACKENDS = ["sqlite", "mongodb"]


def plugins(ring_timeout_s=600):
    return {"calls": {"path": os.path.join(PLUGIN_DIR, "calls.so"),
                      "config": {"ring_timeout_s": ring_timeout_s, "ring_sweep_ms": 200,
                                 "rings_per_hour": 20}}}


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
    s = Server(plugins=plugins(), core={"storage": backend_config(request, request.param)})
    s.start()
    yield s
    try:
        assert s.stop() == 0
    finally:
        s.kill()


@pytest.fixture(params=BACKENDS)
def backend(request):
    return backend_config(request, request.param)


class Client:
    """One /ws connection that keeps what it received while waiting for something else."""

    def __init__(self, ws):
        self.ws, self.seen = ws, []

    async def call(self, type_, data):
        id_ = os.urandom(4).hex()
        await self.ws.send(json.dumps({"type": type_, "id": id_, "data": data}))
        return await self.next(lambda m: m.get("id") == id_)

    async def next(self, pred, timeout=15):
        for i, m in enumerate(self.seen):
            if pred(m):
                return self.seen.pop(i)
        while True:
            m = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if pred(m):
                return m
            self.seen.append(m)

    async def push(self, type_, call=None):
        return (await self.next(lambda m: m.get("type") == type_ and
                                (call is None or m["data"].get("call") == call)))["data"]

    def has(self, type_):
        return any(m.get("type") == type_ for m in self.seen)


def connect(srv, sub, verified=True):
    tok = make_token(sub=sub, verified=verified)
    return websockets.connect(srv.ws_url, extra_headers={"Authorization": "Bearer " + tok})


def ok(reply):
    assert reply["type"] == "result", reply
    return reply["data"]


def problem(reply, code, field=None):
    assert reply["type"] == "error", reply
    assert reply["data"]["code"] == code, reply
    if field:
        assert reply["data"]["field"] == field, reply
    return reply["data"]


def users(tag):
    r = os.urandom(3).hex()
    return f"{tag}-caller-{r}", f"{tag}-callee-{r}"


def test_ring_accept(srv):
    caller, callee = users("acc")

    async def go():
        async with connect(srv, caller) as a, connect(srv, callee) as b1, \
                connect(srv, callee) as b2:
            A, B1, B2 = Client(a), Client(b1), Client(b2)
            # both callee sockets are signed in once they answer a message
            for c in (A, B1, B2):
                problem(await c.call("calls.accept", {"call": "0" * 24}), "call_not_found")
            r = ok(await A.call("calls.ring", {"to": callee, "match_id": "m7",
                                               "call_type": "audio"}))
            assert r["state"] == "ringing" and r["room"] == "match-m7" and r["to"] == callee
            call = r["call"]
            for B in (B1, B2):
                ev = await B.push("calls.ringing", call)
                assert ev["from"]["id"] == caller and ev["from"]["name"] == caller
                assert ev["room"] == "match-m7" and ev["call_type"] == "audio"
                assert ev["expires_at"] == r["expires_at"]
            # a second ring while this one rings: refused
            problem(await A.call("calls.ring", {"to": callee, "room": "r2"}), "call_in_progress")
            # the caller cannot answer its own call
            problem(await A.call("calls.accept", {"call": call}), "call_not_found", "call")
            a_ok = ok(await B1.call("calls.accept", {"call": call}))
            assert a_ok["state"] == "accepted" and a_ok["room"] == "match-m7"
            ev = await A.push("calls.accepted", call)
            assert ev["to"]["id"] == callee and ev["room"] == "match-m7"
            ev = await B2.push("calls.answered_elsewhere", call)
            assert ev["answer"] == "accepted"
            # once answered it is no longer ringing: not twice, not declined, not cancelled
            assert problem(await B2.call("calls.decline", {"call": call}),
                           "call_not_ringing")["state"] == "accepted"
            assert problem(await A.call("calls.cancel", {"call": call}),
                           "call_not_ringing")["state"] == "accepted"
            # the caller may ring again now; the answering socket heard no answered_elsewhere
            r2 = ok(await A.call("calls.ring", {"to": callee, "room": "again"}))
            await B1.push("calls.ringing", r2["call"])
            assert not B1.has("calls.answered_elsewhere")
            ok(await A.call("calls.cancel", {"call": r2["call"]}))
            await B2.push("calls.cancelled", r2["call"])
    asyncio.run(go())


def test_decline_and_cancel(srv):
    caller, callee = users("dec")

    async def go():
        async with connect(srv, caller) as a, connect(srv, callee) as b:
            A, B = Client(a), Client(b)
            problem(await B.call("calls.accept", {"call": "0" * 24}), "call_not_found")
            call = ok(await A.call("calls.ring", {"to": callee, "room": "room-1"}))["call"]
            ev = await B.push("calls.ringing", call)
            assert ev["call_type"] == "video"  # the default
            assert ok(await B.call("calls.decline", {"call": call}))["state"] == "declined"
            ev = await A.push("calls.declined", call)
            assert ev["from"]["id"] == caller and ev["to"]["id"] == callee
            # cancel: the callee hears it; the callee cannot cancel, the caller cannot decline
            call = ok(await A.call("calls.ring", {"to": callee, "room": "room-1"}))["call"]
            await B.push("calls.ringing", call)
            problem(await B.call("calls.cancel", {"call": call}), "call_not_found")
            problem(await A.call("calls.decline", {"call": call}), "call_not_found")
            assert ok(await A.call("calls.cancel", {"call": call}))["state"] == "cancelled"
            ev = await B.push("calls.cancelled", call)
            assert ev["from"]["id"] == caller
            assert problem(await B.call("calls.accept", {"call": call}),
                           "call_not_ringing")["state"] == "cancelled"
    asyncio.run(go())


def test_refusals(srv):
    caller, callee = users("ref")

    async def go():
        async with connect(srv, caller) as a, connect(srv, "unverified-" + caller,
                                                      verified=False) as u:
            A, U = Client(a), Client(u)
            problem(await U.call("calls.ring", {"to": callee, "room": "x"}),
                    "verification_required")
            problem(await U.call("calls.accept", {"call": "0" * 24}), "verification_required")
            problem(await A.call("calls.ring", {"to": caller, "room": "x"}), "call_to_self", "to")
            problem(await A.call("calls.ring", {"room": "x"}), "missing_field", "to")
            problem(await A.call("calls.ring", {"to": "no such/user", "room": "x"}),
                    "invalid_field", "to")
            problem(await A.call("calls.ring", {"to": callee}), "missing_field", "match_id")
            problem(await A.call("calls.ring", {"to": callee, "room": "a", "match_id": "b"}),
                    "invalid_field", "room")
            problem(await A.call("calls.ring", {"to": callee, "room": "a/b"}),
                    "invalid_field", "room")
            problem(await A.call("calls.ring", {"to": callee, "room": "a", "call_type": "fax"}),
                    "invalid_field", "call_type")
            problem(await A.call("calls.ring", {"to": callee, "room": "a", "extra": 1}),
                    "unknown_field", "extra")
            problem(await A.call("calls.accept", {"call": "not-an-id"}), "invalid_field", "call")
            problem(await A.call("calls.accept", {}), "missing_field", "call")
            problem(await A.call("calls.accept", {"call": 5}), "invalid_field", "call")
        async with websockets.connect(srv.ws_url) as anon:
            problem(await Client(anon).call("calls.ring", {"to": callee, "room": "x"}),
                    "unauthorized")
    asyncio.run(go())


def test_ring_rate_limit(srv):
    caller, callee = users("rate")

    async def go():
        async with connect(srv, caller) as a:
            A = Client(a)
            for i in range(20):  # rings_per_hour: 20 in this configuration
                call = ok(await A.call("calls.ring", {"to": callee, "room": f"r{i}"}))["call"]
                ok(await A.call("calls.cancel", {"call": call}))
            err = problem(await A.call("calls.ring", {"to": callee, "room": "r6"}), "rate_limited")
            assert err["retry_after_ms"] > 0
            # answers are not limited by it
            problem(await A.call("calls.cancel", {"call": call}), "call_not_ringing")
    asyncio.run(go())


def test_no_answer_is_missed(backend):
    s = Server(plugins=plugins(ring_timeout_s=1), core={"storage": backend}).start()
    try:
        caller, callee = users("miss")

        async def go():
            async with connect(s, caller) as a, connect(s, callee) as b:
                A, B = Client(a), Client(b)
                problem(await B.call("calls.accept", {"call": "0" * 24}), "call_not_found")
                call = ok(await A.call("calls.ring", {"to": callee, "room": "late"}))["call"]
                await B.push("calls.ringing", call)
                for c in (A, B):
                    ev = await c.push("calls.missed", call)
                    assert ev["from"]["id"] == caller and ev["to"]["id"] == callee
                assert problem(await B.call("calls.accept", {"call": call}),
                               "call_not_ringing")["state"] == "missed"
                assert not A.has("calls.missed") and not B.has("calls.missed")  # once each
                # the caller is free to ring again
                ok(await A.call("calls.ring", {"to": callee, "room": "late"}))
        asyncio.run(go())
        assert s.stop() == 0
    finally:
        s.kill()


def test_ringing_at_restart_is_missed_once(backend):
    s = Server(plugins=plugins(ring_timeout_s=600), core={"storage": backend}).start()
    try:
        caller, callee = users("rst")

        async def ring():
            async with connect(s, caller) as a:
                return ok(await Client(a).call("calls.ring", {"to": caller + "-x", "room": "r"}))
        call = asyncio.run(ring())["call"]
        assert s.stop() == 0
        s.start()
        assert s.wait_log(f"call {call} missed", 20), s.log()

        async def after():
            async with connect(s, caller + "-x") as b, connect(s, caller) as a:
                assert problem(await Client(b).call("calls.accept", {"call": call}),
                               "call_not_ringing")["state"] == "missed"
                # no longer ringing: the caller may ring again
                return ok(await Client(a).call("calls.ring", {"to": callee, "room": "r"}))
        asyncio.run(after())
        assert s.log().count(f"call {call} missed") == 1
        assert s.stop() == 0
        s.start()  # the second call is ringing at this restart; the first is not missed again
        assert s.wait_log("missed", 20)

        async def check():
            async with connect(s, caller) as a:
                return await Client(a).call("calls.ring", {"to": callee, "room": "r"})
        ok(asyncio.run(check()))
        assert f"call {call} missed" not in s.log()
        assert s.stop() == 0
    finally:
        s.kill()


# ---- LiveKit-format webhooks for calls (the webhooks plugin's format=livekit) -----------------
def test_livekit_webhooks_for_calls(backend):
    """An admin's endpoint in LiveKit's format (no stream: every event) receives room_started,
    participant_joined, participant_left and room_finished, signed as LiveKit does, when a
    livekit-client-like connection joins and leaves a call on /rtc/v1."""
    import urllib.parse
    from test_webhooks import API_KEY, API_SECRET, EP, Receiver, api_token, verify_livekit
    receiver = Receiver()
    key, secret = "APIcallsWh", "calls-webhook-secret-0123456789abcdefgh"
    s = Server(plugins={
        "streams": {"path": os.path.join(PLUGIN_DIR, "streams.so")},
        "calls": {"path": os.path.join(PLUGIN_DIR, "calls.so"),
                  "config": {"api_key": key, "api_secret": secret}},
        "webhooks": {"path": os.path.join(PLUGIN_DIR, "webhooks.so"),
                     "config": {"allow_private": True, "sweep_interval_ms": 300}}},
        core={"storage": backend,
              "auth": {"api_keys": [f"{API_KEY}:{API_SECRET}"]}}).start()
    try:
        path = "/lk-calls-" + os.urandom(3).hex()
        r = s.http("POST", EP, {"url": receiver.url(path), "events": ["calls.*"],
                                "format": "livekit"}, token=api_token())
        assert r.status == 201, r
        ep_key, ep_secret = r.json()["endpoint"]["api_key"], r.json()["secret"]
        user = make_token(sub="wh-alice", verified=True)
        r = s.http("POST", "/api/v1/calls/token", body={"match_id": "wh1"}, token=user)
        assert r.status == 200, r
        tok = r.json()["token"]

        async def join_and_leave():
            url = s.ws_url.replace("/ws", "/rtc/v1?") + urllib.parse.urlencode(
                {"access_token": tok})
            async with websockets.connect(url) as ws:
                await asyncio.wait_for(ws.recv(), 15)  # the join response
        asyncio.run(join_and_leave())
        want = ["room_started", "participant_joined", "participant_left", "room_finished"]

        def events():
            return [verify_livekit(ep_key, ep_secret, h, b) for _, h, b in
                    receiver.delivered(path)]
        receiver.wait(lambda: set(want) <= {e["event"] for e in events()}, "LiveKit call events")
        got = {e["event"]: e for e in events()}
        assert sorted(got) == sorted(want), got
        for name in want:
            assert got[name]["room"]["name"] == "match-wh1"
            assert got[name]["room"]["sid"].startswith("RM_")
        assert got["participant_joined"]["participant"]["identity"] == "wh-alice"
        assert got["participant_joined"]["participant"]["state"] == "ACTIVE"
        assert got["participant_joined"]["participant"]["sid"].startswith("PA_")
        assert got["participant_left"]["participant"]["state"] == "DISCONNECTED"
        assert s.stop() == 0
    finally:
        s.kill()
        receiver.stop()


def test_concurrent_rings_one_wins():
    """Rings sent at the same instant from two sockets of one caller: exactly one rings, the
    others get call_in_progress and their callees hear nothing. The store's unique index on the
    active-ring key decides (sqlite here; CongoDB does not enforce unique indexes, a real MongoDB
    does with the same partial unique index)."""
    s = Server(plugins=plugins(), core={"storage": {"backend": "sqlite"}}).start()
    try:
        caller = f"race-caller-{os.urandom(3).hex()}"
        callees = [f"race-callee{i}-{os.urandom(3).hex()}" for i in range(6)]

        async def go():
            async with connect(s, caller) as a1, connect(s, caller) as a2:
                A = [Client(a1), Client(a2)]
                for c in A:  # signed in once they answer a message
                    problem(await c.call("calls.accept", {"call": "0" * 24}), "call_not_found")
                for rnd in range(3):
                    ids = [f"ring{rnd}-{i}" for i in range(len(callees))]
                    for i, to in enumerate(callees):  # all sent before any answer is read
                        await A[i % 2].ws.send(json.dumps({"type": "calls.ring", "id": ids[i],
                                                           "data": {"to": to,
                                                                    "room": f"race{rnd}-{i}"}}))
                    replies = [await A[i % 2].next(lambda m, i=i: m.get("id") == ids[i])
                               for i in range(len(callees))]
                    won = [r["data"] for r in replies if r["type"] == "result"]
                    lost = [r["data"] for r in replies if r["type"] == "error"]
                    assert len(won) == 1, replies
                    assert [e["code"] for e in lost] == ["call_in_progress"] * 5, replies
                    # the winner's call is the caller's one ringing call: cancel it, ring again
                    ok(await A[0].call("calls.cancel", {"call": won[0]["call"]}))
        asyncio.run(go())
        assert s.stop() == 0
    finally:
        s.kill()
