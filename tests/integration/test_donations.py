"""Donations plugin end to end against a real onaird with the streams (and moderation) plugins,
on both storage backends (sqlite and CongoDB for mongodb): idempotent creates (replays, a
conflicting body, N threads with one key), bad amounts and currencies, a blocked and a held
message (moderation's blocked terms on chat.message), refunds, totals, leaderboard, history and
CSV from the ledger, the Stripe-style provider with webhooks signed by this test (bad, stale
and replayed signatures, a pending donation confirmed after a restart exactly once), and an
overlay that disconnects mid-queue and gets exactly the alerts it missed."""
import asyncio
import base64
import csv
import hashlib
import hmac
import io
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
WHSEC = "whsec_" + base64.b32encode(os.urandom(10)).decode().lower()


def api_token(roles=("admin",), sub="backend-admin"):
    return make_token(sub=sub, roles=roles, secret=API_SECRET, iss=API_KEY)


def plugins(provider="test"):
    return {"streams": {"path": os.path.join(PLUGIN_DIR, "streams.so")},
            "moderation": {"path": os.path.join(PLUGIN_DIR, "moderation.so")},
            "donations": {"path": os.path.join(PLUGIN_DIR, "donations.so"),
                          "config": {"provider": provider,
                                     "currencies": ["USD", "EUR", "JPY"],
                                     "currency_limits": ["JPY:100:100000"]}}}


def core(backend):
    return {"auth": {"password_hash": "interactive", "api_keys": [f"{API_KEY}:{API_SECRET}"]},
            "storage": backend,
            "rate_limits": {"donations.create": "100000/1m", "streams.follow": "100000/1m"}}


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
    def __init__(self, srv, name):
        self.srv = srv
        self.username = name + base64.b32encode(os.urandom(5)).decode().lower()
        r = srv.http("POST", "/api/v1/auth/register",
                     {"username": self.username, "email": self.username + "@example.org",
                      "password": PW})
        assert r.status == 201, r
        self.token = r.json()["access_token"]
        self.id = claims(self.token)["sub"]

    def call(self, method, path, body=None, **kw):
        return self.srv.http(method, path, body, token=self.token, **kw)


class Anon:
    def __init__(self, srv, token=None):
        self.srv, self.token = srv, token

    def call(self, method, path, body=None, **kw):
        return self.srv.http(method, path, body, token=self.token, **kw)


class Cast:
    def __init__(self, srv, **fields):
        self.srv = srv
        self.anon = Anon(srv)
        self.admin = Anon(srv, api_token())
        self.owner = Account(srv, "owner")
        self.donor = Account(srv, "donor")
        self.other = Account(srv, "other")
        body = {"title": "tips welcome"}
        body.update(fields)
        r = self.owner.call("POST", "/api/v1/streams", body)
        assert r.status == 201, r
        self.sid = r.json()["stream"]["id"]

    def path(self, tail=""):
        return f"/api/v1/streams/{self.sid}/donations{tail}"


def problem(r, status, code, field=None):
    assert r.status == status, f"want {status} {code}, got {r!r}"
    assert (r.header("Content-Type") or "").startswith("application/problem+json"), r
    body = r.json()
    assert body["code"] == code, body
    assert body.get("detail"), body
    if field:
        assert body.get("field") == field, body
    return body


def donate(acct, cast, amount=500, currency="USD", key=None, raw=None, **extra):
    body = {"amount": amount, "currency": currency}
    body.update(extra)
    headers = {"Idempotency-Key": key or os.urandom(8).hex()}
    if raw is not None:
        headers["Content-Type"] = "application/json"
        return acct.srv.http("POST", cast.path(), raw.encode(), headers=headers,
                             token=acct.token)
    return acct.call("POST", cast.path(), body, headers=headers)


def created(r):
    assert r.status == 201, r
    return r.json()["donation"]


# ---- create, idempotency, bad input ----------------------------------------------------------
def test_create_replay_conflict_and_bad_input(srv):
    c = Cast(srv)
    key = os.urandom(8).hex()
    r1 = donate(c.donor, c, 1234, "USD", key=key, message="Great stream!")
    d = created(r1)
    assert d["status"] == "succeeded" and d["provider"] == "test", d
    assert d["amount"] == 1234 and d["currency"] == "USD" and d["streamer"] == c.owner.id
    # a retry: same status and body, no second donation
    r2 = donate(c.donor, c, 1234, "USD", key=key, message="Great stream!")
    assert r2.status == 201 and r2.json() == r1.json(), (r1, r2)
    problem(donate(c.donor, c, 1235, "USD", key=key, message="Great stream!"), 409,
            "idempotency_conflict")
    r = c.donor.call("GET", "/api/v1/donations")
    assert r.status == 200 and [x["id"] for x in r.json()["donations"]] == [d["id"]], r

    problem(c.donor.call("POST", c.path(), {"amount": 500, "currency": "USD"}), 400,
            "missing_idempotency_key", "Idempotency-Key")
    problem(donate(c.donor, c, 0), 400, "invalid_amount", "amount")
    problem(donate(c.donor, c, -100), 400, "invalid_amount", "amount")
    problem(donate(c.donor, c, 1.5), 400, "invalid_field", "amount")
    problem(donate(c.donor, c, "100"), 400, "invalid_field", "amount")
    problem(donate(c.donor, c, 99), 400, "amount_too_small", "amount")
    problem(donate(c.donor, c, 1000001), 400, "amount_too_large", "amount")
    problem(donate(c.donor, c, 2 ** 63 - 1), 400, "amount_too_large", "amount")
    # beyond int64 the JSON number itself is refused
    problem(donate(c.donor, c, raw='{"amount": 99999999999999999999, "currency": "USD"}'), 400,
            "invalid_json")
    problem(donate(c.donor, c, 500, "ABC"), 400, "unknown_currency", "currency")
    problem(donate(c.donor, c, 500, "usd"), 400, "unknown_currency", "currency")
    problem(donate(c.donor, c, 500, "GBP"), 400, "currency_not_accepted", "currency")
    problem(donate(c.donor, c, 99, "JPY"), 400, "amount_too_small", "amount")
    assert created(donate(c.donor, c, 100, "JPY"))["amount"] == 100
    problem(donate(c.donor, c, message="x" * 301), 400, "invalid_field", "message")
    problem(donate(c.donor, c, message=""), 400, "invalid_field", "message")
    problem(donate(c.donor, c, tip=1), 400, "unknown_field", "tip")
    problem(c.anon.call("POST", c.path(), {"amount": 500, "currency": "USD"},
                        headers={"Idempotency-Key": "k"}), 401, "unauthorized")
    problem(c.donor.call("POST", "/api/v1/streams/5a00000000000000000000ff/donations",
                         {"amount": 500, "currency": "USD"}, headers={"Idempotency-Key": "k"}),
            404, "stream_not_found")
    # nothing of the refused ones was written
    r = c.owner.call("GET", "/api/v1/donations?as=streamer&limit=100")
    assert len(r.json()["donations"]) == 2, r

    # the streamer's own list of currencies and limits
    r = c.owner.call("PUT", "/api/v1/donations/settings",
                     {"currencies": ["GBP"], "limits": {"GBP": {"min": 300, "max": 400}}})
    assert r.status == 200, r
    assert r.json()["settings"]["currencies"] == ["GBP"]
    problem(donate(c.donor, c, 500, "USD"), 400, "currency_not_accepted", "currency")
    problem(donate(c.donor, c, 500, "GBP"), 400, "amount_too_large", "amount")
    created(donate(c.donor, c, 350, "GBP"))
    problem(c.owner.call("PUT", "/api/v1/donations/settings", {"currencies": ["XXQ"]}), 400,
            "unknown_currency", "currencies")
    problem(c.owner.call("PUT", "/api/v1/donations/settings",
                         {"limits": {"GBP": {"min": 5, "max": 1}}}), 400, "invalid_field",
            "limits.GBP")


def test_blocked_and_held_messages(srv):
    c = Cast(srv)
    for pattern, action in (("scam", "deny"), ("later", "hold")):
        r = c.owner.call("POST", f"/api/v1/streams/{c.sid}/moderation/terms",
                         {"pattern": pattern, "action": action})
        assert r.status == 201, r
    # a blocked term refuses the donation before any payment: nothing is written
    problem(donate(c.donor, c, message="this is a scam"), 403, "message_denied", "message")
    r = c.owner.call("GET", "/api/v1/donations?as=streamer")
    assert r.json()["donations"] == [], r
    # a held message: the donation goes through, the message is kept for the streamer only
    d = created(donate(c.donor, c, 800, message="read this later"))
    r = c.owner.call("GET", f"/api/v1/donations/{d['id']}")
    got = r.json()["donation"]
    assert got["message_held"] is True and got["message"] == "read this later", got
    r = c.donor.call("GET", f"/api/v1/donations/{d['id']}")
    assert r.json()["donation"]["message"] is None, r
    problem(c.other.call("GET", f"/api/v1/donations/{d['id']}"), 404, "donation_not_found")
    # a user banned from the stream tips it no more than she chats in it
    r = c.owner.call("POST", f"/api/v1/streams/{c.sid}/moderation/bans", {"user": c.other.id})
    assert r.status == 201, r
    problem(donate(c.other, c), 403, "banned")


def test_concurrent_double_submit_creates_one(srv):
    c = Cast(srv)
    key = os.urandom(8).hex()
    results = []
    lock = threading.Lock()

    def submit():
        r = donate(c.donor, c, 4321, "EUR", key=key)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=submit) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status == 201 for r in results), results
    ids = {r.json()["donation"]["id"] for r in results}
    assert len(ids) == 1, ids
    r = c.owner.call("GET", "/api/v1/donations?as=streamer&limit=100")
    assert len(r.json()["donations"]) == 1, r
    r = c.anon.call("GET", c.path("/totals"))
    eur = r.json()["totals"]["EUR"]
    assert eur["received"] == 4321 and eur["count"] == 1, eur


def test_unlisted_stream_needs_its_share_token(srv):
    """Donating to an unlisted stream and reading its totals and leaderboard need its share
    token (?share=), as every route of such a stream: without it (or with another) it is 404."""
    c = Cast(srv, visibility="unlisted")
    token = c.owner.call("GET", f"/api/v1/streams/{c.sid}").json()["stream"]["share_token"]
    for tail in ("", "?share=sh_nope"):
        problem(c.donor.call("POST", c.path(tail), {"amount": 500, "currency": "USD"},
                             headers={"Idempotency-Key": os.urandom(8).hex()}), 404,
                "stream_not_found")
        problem(c.anon.call("GET", c.path("/totals" + tail)), 404, "stream_not_found")
        problem(c.anon.call("GET", c.path("/leaderboard" + tail)), 404, "stream_not_found")
    r = c.donor.call("POST", c.path(f"?share={token}"), {"amount": 500, "currency": "USD"},
                     headers={"Idempotency-Key": os.urandom(8).hex()})
    created(r)
    r = c.anon.call("GET", c.path(f"/totals?share={token}"))
    assert r.status == 200 and r.json()["totals"]["USD"]["received"] == 500, r
    r = c.owner.call("GET", c.path("/totals"))  # its owner needs no token
    assert r.status == 200, r


# ---- refunds, totals, leaderboard, history, CSV ------------------------------------------------
def test_refunds_totals_leaderboard_history_csv(srv):
    c = Cast(srv)
    a = created(donate(c.donor, c, 1000, "USD", message="=HYPERLINK(\"x\")"))
    created(donate(c.other, c, 700, "USD", anonymous=True, message='say "hi", ok'))
    created(donate(c.donor, c, 300, "EUR"))
    ref = f"/api/v1/donations/{a['id']}/refunds"
    problem(c.donor.call("POST", ref, {"amount": 100}), 403, "forbidden")
    r = c.owner.call("POST", ref, {"amount": 400, "reason": "partial"})
    assert r.status == 201 and r.json()["refund"]["amount"] == 400, r
    b = problem(c.owner.call("POST", ref, {"amount": 601}), 409, "refund_exceeds_remaining",
                "amount")
    assert b["remaining"] == 600, b
    problem(c.owner.call("POST", ref, {"amount": 0}), 400, "invalid_amount", "amount")
    problem(c.owner.call("POST", ref, {"amount": 2.5}), 400, "invalid_field", "amount")
    r = c.admin.call("POST", ref, {"amount": 100})
    assert r.status == 201, r
    got = c.donor.call("GET", f"/api/v1/donations/{a['id']}").json()["donation"]
    assert got["status"] == "partially_refunded" and got["refunded_amount"] == 500, got

    t = c.anon.call("GET", c.path("/totals")).json()["totals"]
    assert t["USD"] == {"received": 1700, "refunded": 500, "disputed": 0, "net": 1200,
                        "count": 2}, t
    assert t["EUR"]["net"] == 300, t
    t = c.owner.call("GET", "/api/v1/donations/totals?as=streamer").json()["totals"]
    assert t["USD"]["net"] == 1200, t
    t = c.donor.call("GET", "/api/v1/donations/totals").json()["totals"]
    assert t["USD"]["net"] == 500 and t["EUR"]["net"] == 300, t
    problem(c.donor.call("GET", f"/api/v1/donations/totals?streamer={c.owner.id}"), 403,
            "forbidden")

    for period in ("day", "week", "month", "all"):
        r = c.anon.call("GET", c.path(f"/leaderboard?period={period}"))
        assert r.status == 200, r
        usd = r.json()["leaders"]["USD"]
        assert [(x["donor"], x["amount"]) for x in usd] == [(None, 700), (c.donor.id, 500)], usd
        assert usd[0]["anonymous"] is True
    problem(c.anon.call("GET", c.path("/leaderboard?period=year")), 400, "invalid_query", "period")

    r = c.owner.call("GET", "/api/v1/donations?as=streamer&limit=2")
    page = r.json()
    assert len(page["donations"]) == 2 and page["next"], page
    r = c.owner.call("GET", "/api/v1/donations?as=streamer&limit=2&after=" + page["next"])
    assert len(r.json()["donations"]) == 1, r
    mine = c.other.call("GET", "/api/v1/donations").json()["donations"]
    assert len(mine) == 1 and mine[0]["donor"] == c.other.id, mine

    r = c.owner.call("GET", "/api/v1/donations/export.csv")
    assert r.status == 200, r
    assert r.header("Content-Type").startswith("text/csv"), r
    rows = list(csv.reader(io.StringIO(r.body)))
    assert rows[0][:6] == ["id", "created_at", "stream", "donor", "anonymous", "amount"], rows
    assert len(rows) == 4, rows
    messages = {row[10] for row in rows[1:]}
    assert "'=HYPERLINK(\"x\")" in messages and 'say "hi", ok' in messages, messages
    first = [row for row in rows[1:] if row[0] == a["id"]][0]
    assert first[5] == "1000" and first[7] == "500" and first[8] == "partially_refunded", first


# ---- overlays ----------------------------------------------------------------------------------
def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


class Client:
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

    async def alerts(self, n, timeout=10):
        """The next n alert.show frames."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            kept = [m for m in self.seen if m.get("type") == "alert.show"]
            if kept:
                self.seen.remove(kept[0])
                out.append(kept[0]["data"])
                continue
            left = deadline - time.monotonic()
            assert left > 0, f"got {out}, saw {self.seen[-10:]}"
            self.seen.append(json.loads(await asyncio.wait_for(self.ws.recv(), left)))
        return out

    async def quiet(self, seconds=0.5):
        """Nothing more arrives (no assertion on timing: a fixed wait for stray frames)."""
        try:
            while True:
                self.seen.append(json.loads(await asyncio.wait_for(self.ws.recv(), seconds)))
        except asyncio.TimeoutError:
            pass
        return [m for m in self.seen if m.get("type") == "alert.show"]


def test_overlay_reconnect_gets_exactly_the_missed_alerts(srv):
    c = Cast(srv)
    r = c.owner.call("POST", "/api/v1/donations/overlay-token")
    assert r.status == 200, r
    token = r.json()["settings"]["overlay_token"]

    async def scenario():
        async with websockets.connect(srv.ws_url) as ws, \
                websockets.connect(srv.ws_url) as viewer:
            o = Client(ws)
            v = Client(viewer)
            r = await v.call("streams.watch", {"stream_id": c.sid})
            assert r["type"] == "result", r
            r = await o.call("donations.alerts.subscribe", {"token": "ov_wrong"})
            assert r["type"] == "error" and r["data"]["code"] == "invalid_overlay_token", r
            r = await o.call("donations.alerts.subscribe", {"token": token})
            assert r["type"] == "result" and r["data"]["streamer"] == c.owner.id, r
            ids = [created(donate(c.donor, c, 100 * (i + 1)))["id"] for i in range(3)]
            got = await o.alerts(3)
            assert [a["seq"] for a in got] == [1, 2, 3], got
            assert [a["data"]["donation"] for a in got] == ids, got
            # a viewer of the stream hears donation.received
            m = [x for x in v.seen if x.get("type") == "donation.received"]
            while len(m) < 3:
                v.seen.append(json.loads(await asyncio.wait_for(viewer.recv(), 10)))
                m = [x for x in v.seen if x.get("type") == "donation.received"]
            assert m[0]["data"]["amount"] == 100, m
            r = await o.call("donations.alerts.ack", {"seq": 2})
            assert r["data"] == {"acked": 2}, r
            r = await o.call("donations.alerts.ack", {"seq": 7})
            assert r["type"] == "error" and r["data"]["field"] == "seq", r
        # the overlay is gone: more donations and a follow queue up
        ids.append(created(donate(c.donor, c, 400))["id"])
        r = c.other.call("POST", f"/api/v1/users/{c.owner.id}/follow")
        assert r.status == 201, r
        ids.append(created(donate(c.donor, c, 500))["id"])
        async with websockets.connect(srv.ws_url) as ws:
            o = Client(ws)
            r = await o.call("donations.alerts.subscribe", {"token": token})
            assert r["data"]["acked"] == 2, r
            got = await o.alerts(4)
            assert [a["seq"] for a in got] == [3, 4, 5, 6], got
            kinds = [a["kind"] for a in got]
            assert sorted(kinds) == ["donation", "donation", "donation", "follow"], got
            assert await o.quiet() == [], "an alert came twice"
            r = await o.call("donations.alerts.ack", {"seq": 6})
            assert r["data"] == {"acked": 6}, r
            # pause: nothing is shown until resume, then in order
            assert c.owner.call("POST", "/api/v1/donations/alerts/pause").status == 200
            created(donate(c.donor, c, 600))
            assert await o.quiet() == []
            r = c.owner.call("POST", "/api/v1/donations/alerts/resume")
            assert r.status == 200 and r.json()["settings"]["alerts_paused"] is False, r
            got = await o.alerts(1)
            assert got[0]["seq"] == 7, got
            # replay shows one again (marked), skip tells the overlay
            r = c.owner.call("POST", "/api/v1/donations/alerts/3/replay")
            assert r.status == 200, r
            got = await o.alerts(1)
            assert got[0]["seq"] == 3 and got[0]["replay"] is True, got
            r = c.owner.call("POST", "/api/v1/donations/alerts/7/skip")
            assert r.status == 200 and r.json()["alert"]["skipped"] is True, r
            problem(c.owner.call("POST", "/api/v1/donations/alerts/99/skip"), 404,
                    "alert_not_found")
        # a minimum per currency: smaller donations make no alert
        r = c.owner.call("PUT", "/api/v1/donations/settings", {"alert_min": {"USD": 1000}})
        assert r.status == 200, r
        created(donate(c.donor, c, 999))
        created(donate(c.donor, c, 1000))
        deadline = time.time() + 10
        while time.time() < deadline:
            alerts = c.owner.call("GET", "/api/v1/donations/alerts?after_seq=7").json()["alerts"]
            if alerts:
                break
            time.sleep(0.05)
        assert [(a["seq"], a["data"]["amount"]) for a in alerts] == [(8, 1000)], alerts

    run(scenario())


# ---- Stripe-style provider --------------------------------------------------------------------
def sign(body, secret=WHSEC, t=None):
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def webhook(srv, event, secret=WHSEC, t=None, sig=None):
    body = json.dumps(event).encode()
    headers = {"Content-Type": "application/json",
               "Stripe-Signature": sig if sig is not None else sign(body, secret, t)}
    return srv.http("POST", "/api/v1/donations/webhooks/stripe", body, headers=headers)


def event(kind, obj, eid=None):
    return {"id": eid or "evt_" + os.urandom(8).hex(), "type": kind, "data": {"object": obj}}


@pytest.mark.parametrize("backend", BACKENDS)
def test_stripe_webhooks_and_restart_with_pending(request, backend):
    storage = backend_config(request, backend)
    s = Server(plugins=plugins("stripe"), core=core(storage),
               env={"ONAIR_STRIPE_WEBHOOK_SECRET": WHSEC}).start()
    try:
        assert WHSEC not in s.log()
        c = Cast(s)
        d = created(donate(c.donor, c, 2500, "USD", message="for the stripe test"))
        assert d["status"] == "pending" and d["provider"] == "stripe", d
        assert d["client_secret"].startswith(d["payment_ref"] + "_secret_"), d
        pi = d["payment_ref"]
        assert s.stop() == 0
        s.start()  # a restart while pending
        got = c.donor.call("GET", f"/api/v1/donations/{d['id']}").json()["donation"]
        assert got["status"] == "pending", got
        ok = event("payment_intent.succeeded", {"id": pi, "amount_received": 2500})
        problem(webhook(s, ok, secret="whsec_wrong"), 400, "invalid_signature")
        problem(webhook(s, ok, sig=""), 400, "invalid_signature")
        problem(webhook(s, ok, sig="t=abc,v1=00"), 400, "invalid_signature")
        problem(webhook(s, ok, t=int(time.time()) - 301), 400, "stale_signature")
        r = webhook(s, ok)
        assert r.status == 200 and r.json()["applied"] is True, r
        problem(webhook(s, ok), 409, "webhook_replayed")
        # Stripe may send the same fact again under another event id: applied once only
        r = webhook(s, event("payment_intent.succeeded", {"id": pi, "amount_received": 2500}))
        assert r.status == 200 and r.json()["applied"] is False, r
        t = c.anon.call("GET", c.path("/totals")).json()["totals"]["USD"]
        assert t["received"] == 2500 and t["count"] == 1, t
        r = webhook(s, event("customer.created", {"id": "cus_1"}))
        assert r.status == 200 and r.json()["ignored"] is True, r
        # refunds at Stripe carry the cumulative refunded amount
        r = webhook(s, event("charge.refunded", {"payment_intent": pi, "amount_refunded": 1000}))
        assert r.status == 200 and r.json()["applied"] is True, r
        r = c.owner.call("POST", f"/api/v1/donations/{d['id']}/refunds", {"amount": 500})
        assert r.status == 201, r
        # the webhook for the streamer's refund says 1500 in total: nothing new
        r = webhook(s, event("charge.refunded", {"payment_intent": pi, "amount_refunded": 1500}))
        assert r.status == 200 and r.json()["applied"] is False, r
        problem(c.owner.call("POST", f"/api/v1/donations/{d['id']}/refunds", {"amount": 1001}),
                409, "refund_exceeds_remaining", "amount")
        r = webhook(s, event("charge.dispute.created", {"payment_intent": pi, "amount": 1000}))
        assert r.status == 200, r
        got = c.owner.call("GET", f"/api/v1/donations/{d['id']}").json()["donation"]
        assert got["status"] == "disputed" and got["refunded_amount"] == 1500, got
        assert got["disputed_amount"] == 1000, got
        t = c.anon.call("GET", c.path("/totals")).json()["totals"]["USD"]
        assert t == {"received": 2500, "refunded": 1500, "disputed": 1000, "net": 0,
                     "count": 1}, t
        # a failed payment
        f = created(donate(c.donor, c, 700, "USD"))
        r = webhook(s, event("payment_intent.payment_failed", {"id": f["payment_ref"]}))
        assert r.status == 200 and r.json()["applied"] is True, r
        got = c.donor.call("GET", f"/api/v1/donations/{f['id']}").json()["donation"]
        assert got["status"] == "failed", got
        problem(c.owner.call("POST", f"/api/v1/donations/{f['id']}/refunds", {"amount": 1}), 409,
                "not_refundable")
        assert WHSEC not in s.log()
        assert s.stop() == 0
    finally:
        s.kill()


class FakeStripeAPI:
    """Stripe's API as far as the provider calls it (POST /v1/payment_intents, /v1/refunds), on
    127.0.0.1: it records what it is sent; an amount of 666 is a declined card."""

    def __init__(self):
        import http.server
        import socketserver
        import urllib.parse
        api = self
        self.calls = []
        self.n = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                form = dict(urllib.parse.parse_qsl(body))
                api.calls.append({"path": self.path, "form": form,
                                  "auth": self.headers.get("Authorization"),
                                  "idem": self.headers.get("Idempotency-Key")})
                api.n += 1
                if self.path == "/v1/refunds" and form.get("amount") == "13":
                    status, out = 400, {"error": {"message": "Refund refused for the test.",
                                                  "type": "invalid_request_error"}}
                elif self.path == "/v1/payment_intents" and form.get("amount") == "666":
                    status, out = 402, {"error": {"message": "Your card was declined.",
                                                  "type": "card_error"}}
                elif self.path == "/v1/payment_intents":
                    pid = f"pi_fake{api.n}"
                    status, out = 200, {"id": pid, "object": "payment_intent",
                                        "client_secret": pid + "_secret_abc",
                                        "status": "requires_payment_method"}
                else:
                    status, out = 200, {"id": f"re_fake{api.n}", "object": "refund"}
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_stripe_api_calls_with_a_secret_key(request, backend):
    """With ONAIR_STRIPE_SECRET_KEY the provider creates the PaymentIntent and the refund at
    stripe.api_base (here a local stand-in: no network), with Idempotency-Keys of its own."""
    fake = FakeStripeAPI()
    sk = "sk_test_" + os.urandom(12).hex()
    p = plugins("stripe")
    p["donations"]["config"]["stripe"] = {"api_base": f"http://127.0.0.1:{fake.port}",
                                          "timeout_ms": 5000}
    s = Server(plugins=p, core=core(backend_config(request, backend)),
               env={"ONAIR_STRIPE_WEBHOOK_SECRET": WHSEC, "ONAIR_STRIPE_SECRET_KEY": sk}).start()
    try:
        c = Cast(s)
        key = os.urandom(8).hex()
        r1 = donate(c.donor, c, 1500, "USD", key=key)
        d = created(r1)
        assert d["status"] == "pending" and d["payment_ref"] == "pi_fake1", d
        assert d["client_secret"] == "pi_fake1_secret_abc", d
        call = fake.calls[0]
        assert call["path"] == "/v1/payment_intents" and call["auth"] == "Bearer " + sk, call
        assert call["idem"] == "onair-donation-" + d["id"], call
        assert call["form"]["amount"] == "1500" and call["form"]["currency"] == "usd", call
        assert call["form"]["metadata[donation]"] == d["id"], call
        # a retry answers the first answer without calling Stripe again
        r2 = donate(c.donor, c, 1500, "USD", key=key)
        assert r2.status == 201 and r2.json() == r1.json()
        assert len(fake.calls) == 1, fake.calls
        # a declined card: 502 with Stripe's words, nothing written
        b = problem(donate(c.donor, c, 666, "USD"), 502, "provider_error")
        assert "declined" in b["detail"], b
        r = c.owner.call("GET", "/api/v1/donations?as=streamer")
        assert [x["id"] for x in r.json()["donations"]] == [d["id"]], r
        r = webhook(s, event("payment_intent.succeeded", {"id": "pi_fake1",
                                                          "amount_received": 1500}))
        assert r.status == 200 and r.json()["applied"] is True, r
        r = c.owner.call("POST", f"/api/v1/donations/{d['id']}/refunds", {"amount": 500})
        assert r.status == 201 and r.json()["refund"]["ref"].startswith("re_fake"), r
        call = fake.calls[-1]
        assert call["path"] == "/v1/refunds", call
        assert call["form"] == {"payment_intent": "pi_fake1", "amount": "500"}, call
        assert call["idem"].startswith("onair-refund-"), call
        got = c.donor.call("GET", f"/api/v1/donations/{d['id']}").json()["donation"]
        assert got["status"] == "partially_refunded" and got["refunded_amount"] == 500, got
        # a refund Stripe refuses takes nothing from what remains
        b = problem(c.owner.call("POST", f"/api/v1/donations/{d['id']}/refunds", {"amount": 13}),
                    502, "provider_error")
        assert "Refund refused" in b["detail"], b
        r = c.owner.call("POST", f"/api/v1/donations/{d['id']}/refunds", {"amount": 1000},
                         headers={"Idempotency-Key": "refund-rest"})
        assert r.status == 201, r
        assert fake.calls[-1]["idem"].startswith(f"onair-refund-{d['id']}-"), fake.calls[-1]
        n = len(fake.calls)
        r2 = c.owner.call("POST", f"/api/v1/donations/{d['id']}/refunds", {"amount": 1000},
                          headers={"Idempotency-Key": "refund-rest"})
        assert r2.status == 201 and r2.json() == r.json() and len(fake.calls) == n, r2
        got = c.donor.call("GET", f"/api/v1/donations/{d['id']}").json()["donation"]
        assert got["status"] == "refunded" and got["refunded_amount"] == 1500, got
        assert sk not in s.log() and WHSEC not in s.log()
        assert s.stop() == 0
    finally:
        s.kill()
        fake.stop()
