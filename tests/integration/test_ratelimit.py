"""Rate limits against a real onaird: 429 with headers, recovery, overrides in YAML,
WebSocket error replies without a disconnect."""
import asyncio
import json
import time

import websockets

from onair_harness import make_token


def test_route_limit_429_headers_and_recovery(server_factory):
    # override the plugin's default (3/min) to 2 per 2 s so recovery is quick
    s = server_factory(plugins={"testkit": {}},
                       core={"rate_limits": {"testkit.burst": "2/2s"}}).start()
    ok = [s.http("GET", "/api/v1/testkit/limited") for _ in range(2)]
    assert all(r.status == 200 for r in ok)
    assert ok[0].header("RateLimit-Limit") == "2"
    assert ok[0].header("RateLimit-Remaining") == "1"
    assert ok[1].header("RateLimit-Remaining") == "0"
    r = s.http("GET", "/api/v1/testkit/limited")
    assert r.status == 429
    body = r.json()
    assert body["code"] == "rate_limited" and body["status"] == 429
    retry = int(r.header("Retry-After"))
    assert 1 <= retry <= 2
    assert body["retry_after_s"] == retry  # the one rate_limited shape, REST and WebSocket
    assert r.header("RateLimit-Limit") == "2" and r.header("RateLimit-Remaining") == "0"
    assert int(r.header("RateLimit-Reset")) >= 1
    # other routes are not limited
    assert s.http("GET", "/api/v1/testkit/config").status == 200
    # after the window the limit recovers (bounded wait)
    deadline = time.time() + 10
    while time.time() < deadline:
        time.sleep(0.5)
        r = s.http("GET", "/api/v1/testkit/limited")
        if r.status == 200:
            break
    assert r.status == 200


def test_websocket_limit_replies_error_and_stays_open(server_factory):
    s = server_factory(plugins={"testkit": {}}).start()  # default: 3 per minute

    async def scenario():
        async with websockets.connect(s.ws_url) as ws:
            codes = []
            for i in range(5):
                await ws.send(json.dumps({"type": "testkit.limited", "id": i}))
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert msg["id"] == i
                codes.append(msg["type"] if msg["type"] == "result" else msg["data"]["code"])
            assert codes == ["result"] * 3 + ["rate_limited"] * 2
            await ws.send(json.dumps({"type": "testkit.limited", "id": 9}))
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert msg["data"]["retry_after_ms"] > 0
            assert msg["data"]["retry_after_s"] >= 1
            # the connection is still usable for other types
            await ws.send(json.dumps({"type": "testkit.whoami", "id": "w"}))
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert msg["type"] == "result"

    asyncio.run(scenario())


def test_bad_rate_limit_config_stops_startup_with_position(server_factory):
    s = server_factory(plugins={"testkit": {}},
                       core={"rate_limits": {"testkit.brust": "2/2s", "testkit.burst": "often"}})
    s.start(wait=False)
    assert s.proc.wait(30) == 1
    s._reader.join(5)
    log = s.log()
    assert "did you mean 'testkit.burst'" in log, log
    assert "often" in log
    assert s.config_path + ":" in log
    s.check_sanitizers()


def test_login_attempts_are_limited_per_address_and_account(server_factory):
    s = server_factory(plugins={},
                       core={"auth": {"password_hash": "interactive"},
                             "rate_limits": {"auth.login": "3/1m"}}).start()
    pw = "correct horse battery staple"
    r = s.http("POST", "/api/v1/auth/register",
               body={"username": "limited", "email": "limited@example.com", "password": pw})
    assert r.status == 201, r
    codes = [s.http("POST", "/api/v1/auth/login",
                    body={"username": "limited", "password": "wrong password!!"}).status
             for _ in range(3)]
    assert codes == [401, 401, 401]
    r = s.http("POST", "/api/v1/auth/login", body={"username": "limited", "password": pw})
    assert r.status == 429 and r.json()["code"] == "rate_limited"  # even the right password
    assert int(r.header("Retry-After")) >= 1
    assert r.header("RateLimit-Limit") == "3" and r.header("RateLimit-Remaining") == "0"
    # another account name from the same address has its own budget
    r = s.http("POST", "/api/v1/auth/login", body={"username": "someone", "password": pw})
    assert r.status == 401
