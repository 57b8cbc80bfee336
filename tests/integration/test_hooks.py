"""Hook chains and service calls (SDK ABI 1.3) end to end, through the test plugin
hooktest (tests/plugins/hooktest.c): its config `filters` shapes the chain
"hooktest.chain"; "hooktest.run" runs it and answers the outcome with the list of filter
calls ("seen"), "hooktest.call" calls a service. Ordering across plugins uses the same
rule (priority, then registration order) and is covered here within one plugin."""
import asyncio
import json
import os
import time

import websockets


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def call(ws, type_, data):
    id_ = os.urandom(4).hex()
    await ws.send(json.dumps({"type": type_, "id": id_, "data": data}))
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), 15))
        if m.get("id") == id_:
            return m


def hooktest(server_factory, *filters, **plugins):
    plugins.setdefault("testkit", {})
    plugins["hooktest"] = {"config": {"filters": list(filters)}}
    return server_factory(plugins=plugins).start()


def run_chain(srv, data=None, chain=None):
    async def go():
        async with websockets.connect(srv.ws_url) as ws:
            body = {"data": data if data is not None else {"text": "hi"}}
            if chain:
                body["chain"] = chain
            r = await call(ws, "hooktest.run", body)
            assert r["type"] == "result", r
            return r["data"]
    return run(go())


def names(out):
    return [s["f"] for s in out["seen"]]


def alive(srv):
    r = srv.http("GET", "/api/v1/testkit/config")
    assert r.status == 200, r


def test_order_priority_then_registration(server_factory):
    srv = hooktest(server_factory, "20:rewrite", "10:allow", "5:rewrite", "10:rewrite",
                   "10:async_allow", "-3:allow", "30:allow")
    out = run_chain(srv, {"text": "hi"})
    assert names(out) == ["-3:allow", "5:rewrite", "10:allow", "10:rewrite", "10:async_allow",
                          "20:rewrite", "30:allow"], out
    assert out["verdict"] == "allow" and out["rewritten"] is True
    assert out["reason"] is None and out["decided_by"] is None
    # later filters see the rewritten data; the caller gets the last rewrite
    seen = {s["f"]: s["trace"] for s in out["seen"]}
    assert seen["-3:allow"] is None and seen["5:rewrite"] is None
    assert seen["10:allow"] == ["5:rewrite"]
    assert seen["30:allow"] == ["5:rewrite", "10:rewrite", "20:rewrite"]
    assert out["data"] == {"text": "hi", "trace": ["5:rewrite", "10:rewrite", "20:rewrite"]}
    # the context reaches every filter
    assert all(isinstance(s["conn"], int) and s["conn"] > 0 for s in out["seen"]), out
    # a second run is independent
    assert names(run_chain(srv, {"text": "again"})) == names(out)


def test_allow_unchanged_and_empty_chain(server_factory):
    srv = hooktest(server_factory, "1:allow", "2:async_allow", "3:allow")
    data = {"text": "hello", "n": 3, "nested": {"a": [1, 2]}}
    out = run_chain(srv, data)
    assert out["verdict"] == "allow" and out["rewritten"] is False, out
    assert out["data"] == data and names(out) == ["1:allow", "2:async_allow", "3:allow"]
    # no filter on a chain: ALLOW with the data as given
    out = run_chain(srv, data, chain="hooktest.empty")
    assert out == {"verdict": "allow", "data": data, "rewritten": False, "reason": None,
                   "decided_by": None, "seen": []}, out


def test_deny_and_hold_end_the_run(server_factory):
    srv = hooktest(server_factory, "1:rewrite", "2:deny", "3:allow")
    out = run_chain(srv)
    assert out["verdict"] == "deny" and out["reason"] == "denied by 2:deny", out
    assert out["decided_by"] == "hooktest"
    assert names(out) == ["1:rewrite", "2:deny"]  # 3 never called
    srv.stop()

    srv = hooktest(server_factory, "1:allow", "2:hold", "3:deny")
    out = run_chain(srv)
    assert out["verdict"] == "hold" and out["reason"] == "held by 2:hold", out
    assert out["decided_by"] == "hooktest" and names(out) == ["1:allow", "2:hold"]
    srv.stop()

    srv = hooktest(server_factory, "1:async_rewrite", "2:async_deny", "3:allow")
    out = run_chain(srv)
    assert out["verdict"] == "deny" and out["reason"] == "denied by 2:async_deny", out
    assert names(out) == ["1:async_rewrite", "2:async_deny"]
    assert out["seen"][1]["trace"] == ["1:async_rewrite"]


def test_filter_errors_fail_closed(server_factory):
    for kind in ("error", "noanswer", "badverdict"):
        srv = hooktest(server_factory, "1:allow", "2:" + kind, "3:allow")
        out = run_chain(srv)
        assert out["verdict"] == "deny" and out["reason"] == "filter error", (kind, out)
        assert out["decided_by"] == "hooktest" and names(out) == ["1:allow", "2:" + kind]
        alive(srv)
        srv.stop()


def test_filter_that_never_answers_times_out(server_factory):
    srv = hooktest(server_factory, "1:allow", "2:never", "3:allow")
    t0 = time.monotonic()
    out = run_chain(srv)
    took = time.monotonic() - t0
    assert out["verdict"] == "deny" and out["reason"] == "timeout", out
    assert out["decided_by"] == "hooktest" and names(out) == ["1:allow", "2:never"]
    assert 4.5 <= took <= 10, took
    alive(srv)
    assert srv.wait_log(r"did not answer in time", 1)


def test_late_answer_after_timeout_is_dropped(server_factory):
    srv = hooktest(server_factory, "2:late", "3:allow")
    out = run_chain(srv)
    assert out["verdict"] == "deny" and out["reason"] == "timeout", out
    assert names(out) == ["2:late"]
    # the late answer goes to a stale handle: refused, nothing breaks
    assert srv.wait_log(r"late answer: -15", 5), srv.log()[-2000:]
    alive(srv)


def test_pending_filter_while_stopping(server_factory):
    """Stop with a run waiting on a filter: no crash, no leak (sanitizer check)."""
    srv = hooktest(server_factory, "1:never")

    async def go():
        async with websockets.connect(srv.ws_url) as ws:
            await ws.send(json.dumps({"type": "hooktest.run", "id": 1, "data": {"data": {}}}))
            await asyncio.sleep(0.3)
            assert srv.stop() == 0
    run(go())


def test_services(server_factory):
    srv = hooktest(server_factory)

    async def go():
        async with websockets.connect(srv.ws_url) as ws:
            r = await call(ws, "hooktest.call", {"name": "hooktest.echo", "args": {"x": [1, "y"]}})
            assert r["data"] == {"status": 0,
                                 "result": {"echo": {"x": [1, "y"]}, "caller": "hooktest"}}, r
            r = await call(ws, "hooktest.call", {"name": "hooktest.echo"})
            assert r["data"]["status"] == 0 and r["data"]["result"]["echo"] == {}, r
            t0 = time.monotonic()
            r = await call(ws, "hooktest.call", {"name": "hooktest.later", "args": {"ms": 300}})
            assert time.monotonic() - t0 >= 0.25
            assert r["data"] == {"status": 0,
                                 "result": {"later": True, "echo": {"ms": 300}}}, r
            r = await call(ws, "hooktest.call", {"name": "hooktest.fail"})
            assert r["data"]["status"] == -3, r  # ONAIR_EPERM
            assert isinstance(r["data"]["result"]["error"], str)
            r = await call(ws, "hooktest.call", {"name": "nobody.there"})
            assert r["data"]["status"] == -4, r  # ONAIR_ENOTFOUND
            assert "nobody.there" in r["data"]["result"]["error"]
            r = await call(ws, "hooktest.call", {"name": "Bad Name!"})
            assert r["type"] == "error" and r["data"]["status"] == 400, r
            # several calls in flight at once, answered in their own order
            ids = []
            for i, (name, ms) in enumerate([("hooktest.later", 400), ("hooktest.echo", 0),
                                            ("hooktest.later", 100)]):
                ids.append(f"c{i}")
                await ws.send(json.dumps({"type": "hooktest.call", "id": f"c{i}",
                                          "data": {"name": name, "args": {"ms": ms}}}))
            got = []
            while len(got) < 3:
                m = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if m.get("id") in ids:
                    assert m["data"]["status"] == 0, m
                    got.append(m["id"])
            assert got == ["c1", "c2", "c0"], got
    run(go())
    alive(srv)


def test_pending_service_while_stopping(server_factory):
    srv = hooktest(server_factory)

    async def go():
        async with websockets.connect(srv.ws_url) as ws:
            await ws.send(json.dumps({"type": "hooktest.call", "id": 1,
                                      "data": {"name": "hooktest.later", "args": {"ms": 10000}}}))
            await asyncio.sleep(0.3)
            assert srv.stop() == 0
    run(go())


def test_access_route_without_streams(server_factory):
    """streams is not loaded: its service is not found (ONAIR_ENOTFOUND)."""
    srv = hooktest(server_factory)
    r = srv.http("POST", "/api/v1/hooktest/access", {"stream": "0123456789abcdef01234567"})
    assert r.status == 200 and r.json()["status"] == -4, r
