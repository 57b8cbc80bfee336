"""An account's sessions against a real onaird, on both storage backends (sqlite and CongoDB
for mongodb): GET /api/v1/auth/sessions lists the caller's live sessions (sign-ins) with the
user agent and address of their last use and which one is the caller's; DELETE
/api/v1/auth/sessions/{id} signs one out: its access and refresh tokens stop at once and the
WebSockets it opened are closed.
"""
import asyncio

import pytest
import websockets

from test_auth import (PW, auth_core, backend, congo, decode_part, login, problem,  # noqa: F401
                       register, run, ws_call)


@pytest.fixture
def acct(backend, server_factory):  # noqa: F811
    return server_factory(plugins={"testkit": {}},
                          core={"auth": auth_core(), "storage": backend}).start()


def sign_in(s, who, agent):
    r = s.http("POST", "/api/v1/auth/login", body={"login": who, "password": PW},
               headers={"User-Agent": agent})
    assert r.status == 200, r
    return r.json()


def sessions(s, token):
    r = s.http("GET", "/api/v1/auth/sessions", token=token)
    assert r.status == 200, r
    return r.json()["sessions"]


def test_list_and_revoke_one_session(acct):
    reg = register(acct, "sally")
    laptop = sign_in(acct, "sally", "Laptop/1.0 (X11)")
    phone = sign_in(acct, "sally", "Phone/2.0 \x01évé")
    # every access token names its session
    sid = {name: decode_part(p["access_token"], 1)["sid"]
           for name, p in (("reg", reg), ("laptop", laptop), ("phone", phone))}
    assert len(set(sid.values())) == 3

    seen = sessions(acct, laptop["access_token"])
    assert {x["id"] for x in seen} == set(sid.values())
    by_id = {x["id"]: x for x in seen}
    assert [x["id"] for x in seen if x["current"]] == [sid["laptop"]]
    assert by_id[sid["laptop"]]["user_agent"] == "Laptop/1.0 (X11)"
    assert by_id[sid["phone"]]["ip"] == "127.0.0.1"
    for x in seen:
        assert x["created_at"] <= x["last_used_at"] < x["expires_at"], x
    # the phone asks: it is its own current session
    assert [x["id"] for x in sessions(acct, phone["access_token"]) if x["current"]] == \
        [sid["phone"]]

    # a refresh keeps the session: same id, same sign-in time, a new last use
    r = acct.http("POST", "/api/v1/auth/refresh", body={"refresh_token": phone["refresh_token"]},
                  headers={"User-Agent": "Phone/2.1"})
    assert r.status == 200, r
    phone = r.json()
    assert decode_part(phone["access_token"], 1)["sid"] == sid["phone"]
    after = {x["id"]: x for x in sessions(acct, laptop["access_token"])}
    assert len(after) == 3
    assert after[sid["phone"]]["created_at"] == by_id[sid["phone"]]["created_at"]
    assert after[sid["phone"]]["last_used_at"] >= by_id[sid["phone"]]["last_used_at"]
    assert after[sid["phone"]]["user_agent"] == "Phone/2.1"

    # the laptop signs the phone out: the phone's tokens stop at once
    assert acct.http("GET", "/api/v1/testkit/user", token=phone["access_token"]).status == 200
    r = acct.http("DELETE", f"/api/v1/auth/sessions/{sid['phone']}", token=laptop["access_token"])
    assert r.status == 204, r
    problem(acct.http("GET", "/api/v1/testkit/user", token=phone["access_token"]), 401,
            "token_revoked")
    problem(acct.http("GET", "/api/v1/auth/me", token=phone["access_token"]), 401, "token_revoked")
    problem(acct.http("POST", "/api/v1/auth/refresh",
                      body={"refresh_token": phone["refresh_token"]}), 401,
            "invalid_refresh_token")
    # the others go on
    for p in (laptop, reg):
        assert acct.http("GET", "/api/v1/auth/me", token=p["access_token"]).status == 200
    r = acct.http("POST", "/api/v1/auth/refresh", body={"refresh_token": reg["refresh_token"]})
    assert r.status == 200, r
    assert {x["id"] for x in sessions(acct, laptop["access_token"])} == \
        {sid["reg"], sid["laptop"]}
    # gone is gone: a second revoke is 404
    problem(acct.http("DELETE", f"/api/v1/auth/sessions/{sid['phone']}",
                      token=laptop["access_token"]), 404, "session_not_found")
    # a new sign-in on the phone works again
    again = sign_in(acct, "sally", "Phone/2.1")
    assert acct.http("GET", "/api/v1/auth/me", token=again["access_token"]).status == 200


def test_revoke_own_session_and_others_sessions(acct):
    a = register(acct, "tom")
    b = register(acct, "uma")
    a_sid = decode_part(a["access_token"], 1)["sid"]
    b_sid = decode_part(b["access_token"], 1)["sid"]
    # someone else's session: 404, and it goes on working
    problem(acct.http("DELETE", f"/api/v1/auth/sessions/{b_sid}", token=a["access_token"]), 404,
            "session_not_found")
    assert acct.http("GET", "/api/v1/auth/me", token=b["access_token"]).status == 200
    assert [x["id"] for x in sessions(acct, b["access_token"])] == [b_sid]
    # ids that are not sessions
    for bad in ("nope", "0" * 24, "ABCDEF" * 4, "a" * 25):
        problem(acct.http("DELETE", f"/api/v1/auth/sessions/{bad}", token=a["access_token"]),
                404, "session_not_found")
    # signed out: no list, no revoke
    problem(acct.http("GET", "/api/v1/auth/sessions"), 401, "unauthorized")
    problem(acct.http("DELETE", f"/api/v1/auth/sessions/{a_sid}"), 401, "unauthorized")
    # one's own current session: that is signing out here
    r = acct.http("DELETE", f"/api/v1/auth/sessions/{a_sid}", token=a["access_token"])
    assert r.status == 204, r
    problem(acct.http("GET", "/api/v1/auth/sessions", token=a["access_token"]), 401,
            "token_revoked")
    assert acct.http("GET", "/api/v1/auth/me", token=b["access_token"]).status == 200
    # logout of every session: none is listed
    c = sign_in(acct, "tom", "x")
    assert len(sessions(acct, c["access_token"])) == 1
    r = acct.http("POST", "/api/v1/auth/logout", body={"refresh_token": c["refresh_token"]})
    assert r.status == 204
    d = sign_in(acct, "tom", "y")
    assert [x["user_agent"] for x in sessions(acct, d["access_token"])] == ["y"]


def test_revoking_a_session_closes_its_websockets(acct):
    a = register(acct, "vera")
    b = sign_in(acct, "vera", "Other/1")
    uid = a["user"]["id"]
    sid_a = decode_part(a["access_token"], 1)["sid"]

    async def closed(ws):
        with pytest.raises(websockets.ConnectionClosed) as e:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        return e.value

    async def scenario():
        ticket = acct.http("POST", "/api/v1/auth/ws-ticket", token=a["access_token"]).json()["ticket"]
        by_b = {"Authorization": "Bearer " + b["access_token"]}
        async with websockets.connect(acct.ws_url, subprotocols=["onair", "ticket." + ticket]) as wa, \
                websockets.connect(acct.ws_url, extra_headers=by_b) as wb, \
                websockets.connect(acct.ws_url) as wc:
            # the third signs in after opening, with session a's token
            assert (await ws_call(wc, "auth", {"token": a["access_token"]}))["type"] == "result"
            for ws in (wa, wb, wc):
                assert (await ws_call(ws, "testkit.private"))["data"] == {"user": uid}
            r = acct.http("DELETE", f"/api/v1/auth/sessions/{sid_a}", token=b["access_token"])
            assert r.status == 204, r
            for ws in (wa, wc):
                e = await closed(ws)
                assert (e.code, e.reason) == (1008, "session signed out")
            # session b's socket goes on
            assert (await ws_call(wb, "testkit.private"))["data"] == {"user": uid}
            # and session a's token cannot open a new one
            async with websockets.connect(acct.ws_url, extra_headers={
                    "Authorization": "Bearer " + a["access_token"]}) as wd:
                assert (await closed(wd)).code == 1008
    run(scenario())
