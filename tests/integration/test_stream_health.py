"""Stream health, backup publishers and quality settings against a real onaird, on both storage
backends (issue 16): WHIP ?role=backup (roles, codecs, the owner's media view, the standby
promoted when the active publisher ends, stream.source_switched on the stream's topic),
POST .../backup/activate (who may, which source, 409 when that publisher does not send),
GET .../health (who may, the query), the health.report message (schema, owner, live stream,
rate limit, merged into GET .../health) and the media settings (checked, stored, applied to the
live stream's relay).

The WHIP sessions here never connect (no DTLS client in Python): a switch that needs media and
the grades of a real publisher are tested with Chromium in tests/e2e/backup.test.mjs."""
import asyncio

import pytest
import websockets

from onair_harness import Server
from store_support import storage_config, unique_db
from test_media import offer, post_sdp
from test_streams import (BACKENDS, Account, Anon, Client, api_token, congo, core,  # noqa: F401
                          problem, run, streams_plugin)


@pytest.fixture(scope="module", params=BACKENDS)
def srv(request):
    if request.param == "mongodb":
        backend = storage_config("mongodb", uri=request.getfixturevalue("congo").uri,
                                 database=unique_db())
    else:
        backend = {"backend": "sqlite"}
    c = core(backend)
    c["media"] = {"connect_timeout": 60}  # the sessions here never connect: keep them
    s = Server(plugins={"streams": streams_plugin()}, core=c).start()
    yield s
    try:
        assert s.stop() == 0
    finally:
        s.kill()


def new_stream(owner, **fields):
    body = {"title": "Health test"}
    body.update(fields)
    r = owner.call("POST", "/api/v1/streams", body)
    assert r.status == 201, r
    return r.json()["stream"]["id"], r.json()["stream_key"]


def whip(srv, sid, key, query="", sdp=None):
    return post_sdp(srv, f"/api/v1/whip/{sid}{query}", sdp or offer(), token=key)


def media_view(owner, sid):
    r = owner.call("GET", f"/api/v1/streams/{sid}/media")
    assert r.status == 200, r
    return r.json()


def session_of(r):
    return r.header("Location").rsplit("/", 1)[1]


def status_of(srv, sid, acct):
    return acct.call("GET", f"/api/v1/streams/{sid}").json()["stream"]["status"]


def test_backup_role_codecs_and_promotion(srv):
    owner = Account(srv, "hbo")
    sid, key = new_stream(owner)
    problem(whip(srv, sid, key, "?role=sideways"), 400, "invalid_request")
    primary = whip(srv, sid, key)
    assert primary.status == 201, primary
    # the backup must send what the primary sends
    r = whip(srv, sid, key, "?role=backup", offer(video_codecs=("H264",)))
    body = problem(r, 422, "codec_mismatch")
    assert "VP8" in body["detail"] and "H264" in body["detail"], body
    backup = whip(srv, sid, key, "?role=backup")
    assert backup.status == 201, backup
    m = media_view(owner, sid)
    assert m["active_source"] == "primary", m
    assert m["publisher"]["role"] == "primary" and m["publisher"]["session"] == session_of(primary)
    assert m["standby"]["role"] == "backup" and m["standby"]["session"] == session_of(backup)
    # a second backup replaces the first where it is (media.on_second_publisher: replace)
    backup2 = whip(srv, sid, key, "?role=backup")
    assert backup2.status == 201, backup2
    m = media_view(owner, sid)
    assert m["standby"]["session"] == session_of(backup2), m
    assert m["publisher"]["session"] == session_of(primary), m

    async def scenario():
        async with websockets.connect(srv.ws_url) as w:
            watcher = Client(w)
            r = await watcher.call("streams.watch", {"stream_id": sid})
            assert r["type"] == "result", r
            # the active publisher ends: the backup takes over, the stream stays live
            assert srv.http("DELETE", primary.header("Location"), token=key).status == 200
            ev = await watcher.wait(lambda x: x["type"] == "stream.source_switched")
            assert ev["topic"] == f"stream.{sid}", ev
            d = ev["data"]
            assert (d["stream"], d["from"], d["to"], d["reason"]) == \
                (sid, "primary", "backup", "primary_ended"), d
            assert isinstance(d["at"], int), d

    run(scenario())
    assert status_of(srv, sid, owner) == "live"
    m = media_view(owner, sid)
    assert m["active_source"] == "backup" and m["standby"] is None, m
    assert m["publisher"]["session"] == session_of(backup2), m
    r = owner.call("GET", f"/api/v1/streams/{sid}/health")
    assert [x["reason"] for x in r.json()["switches"]] == ["primary_ended"], r
    metrics = srv.http("GET", "/metrics").body
    if isinstance(metrics, bytes):
        metrics = metrics.decode()
    switches = [ln for ln in metrics.splitlines()
                if ln.startswith("onair_media_source_switches_total ")]
    assert switches and int(switches[0].split()[1]) >= 1, switches
    # the last publisher ends: so does the stream
    assert srv.http("DELETE", backup2.header("Location"), token=key).status == 200
    for _ in range(50):
        if status_of(srv, sid, owner) == "ended":
            break
        run(asyncio.sleep(0.1))
    assert status_of(srv, sid, owner) == "ended"


def test_backup_rejected_in_reject_mode(server_factory):
    s = server_factory(plugins={"streams": streams_plugin()},
                       core={"auth": {"password_hash": "interactive"},
                             "media": {"on_second_publisher": "reject", "connect_timeout": 60}})
    s.start()
    owner = Account(s, "hbr")
    sid, key = new_stream(owner)
    assert whip(s, sid, key).status == 201
    assert whip(s, sid, key, "?role=backup").status == 201  # another role: no conflict
    problem(whip(s, sid, key, "?role=backup"), 409, "already_publishing")
    problem(whip(s, sid, key), 409, "already_publishing")


def test_activate_rules(srv):
    owner, stranger, mod = (Account(srv, n) for n in ("hao", "has", "ham"))
    sid, key = new_stream(owner)
    assert owner.call("PUT", f"/api/v1/streams/{sid}/moderators/{mod.id}").status == 200
    path = f"/api/v1/streams/{sid}/backup/activate"
    problem(Anon(srv).call("POST", path, {"source": "backup"}), 401, "unauthorized")
    problem(owner.call("POST", path, {"source": "sideways"}), 400, "invalid_field", "source")
    problem(owner.call("POST", path, {}), 400, "missing_field", "source")
    problem(owner.call("POST", path, {"source": "backup", "x": 1}), 400, "unknown_field", "x")
    problem(stranger.call("POST", path, {"source": "backup"}), 403, "forbidden")
    problem(mod.call("POST", path, {"source": "backup"}), 403, "forbidden")
    problem(owner.call("POST", "/api/v1/streams/0123456789abcdef01234567/backup/activate",
                       {"source": "backup"}), 404, "stream_not_found")
    # no publisher
    problem(owner.call("POST", path, {"source": "backup"}), 409, "not_live")
    # a primary that has not sent media, no backup at all
    assert whip(srv, sid, key).status == 201
    problem(owner.call("POST", path, {"source": "backup"}), 409, "backup_not_publishing")
    problem(owner.call("POST", path, {"source": "primary"}), 409, "primary_not_publishing")
    admin = Anon(srv, api_token())
    problem(admin.call("POST", path, {"source": "backup"}), 409, "backup_not_publishing")


def test_health_route(srv):
    owner, stranger, mod = (Account(srv, n) for n in ("hho", "hhs", "hhm"))
    sid, _ = new_stream(owner)
    secret, _ = new_stream(owner, visibility="private")
    assert owner.call("PUT", f"/api/v1/streams/{sid}/moderators/{mod.id}").status == 200
    path = f"/api/v1/streams/{sid}/health"
    problem(Anon(srv).call("GET", path), 401, "unauthorized")
    problem(stranger.call("GET", path), 403, "forbidden")
    problem(stranger.call("GET", f"/api/v1/streams/{secret}/health"), 404, "stream_not_found")
    for who in (owner, mod, Anon(srv, api_token())):
        r = who.call("GET", path)
        assert r.status == 200, r
        assert r.json() == {"stream": sid, "live": False, "current": None, "client": None,
                            "history": [], "switches": []}, r.json()
    for bad in ("x", "-1", "", "12a"):
        problem(owner.call("GET", path + "?since=" + bad), 400, "invalid_query", "since")
    assert owner.call("GET", path + "?since=0").status == 200


def test_health_report_message(srv):
    owner, stranger = Account(srv, "hro"), Account(srv, "hrs")
    sid, _ = new_stream(owner)
    secret, _ = new_stream(stranger, visibility="private")
    report = {"stream_id": sid, "fps": 29.5, "bitrate_kbps": 2500, "frames": 60,
              "dropped_frames": 2, "cpu_pct": 91, "rtt_ms": 40, "width": 1280, "height": 720,
              "quality_limitation": "cpu"}

    def hdr(acct):
        return {"Authorization": "Bearer " + acct.token}

    async def scenario():
        async with websockets.connect(srv.ws_url, extra_headers=hdr(owner)) as o, \
                websockets.connect(srv.ws_url, extra_headers=hdr(stranger)) as s, \
                websockets.connect(srv.ws_url) as a:
            O, S, A = Client(o), Client(s), Client(a)

            def err(m, code, status, field=None):
                assert m["type"] == "error", m
                assert m["data"]["code"] == code and m["data"]["status"] == status, m
                if field:
                    assert m["data"].get("field") == field, m

            err(await A.call("health.report", report), "unauthorized", 401)
            err(await O.call("health.report", {"fps": 1}), "missing_field", 400, "stream_id")
            err(await O.call("health.report", dict(report, cpu_pct=150)), "invalid_field", 400,
                "cpu_pct")
            err(await O.call("health.report", dict(report, fps="30")), "invalid_field", 400, "fps")
            err(await O.call("health.report", dict(report, quality_limitation="gpu")),
                "invalid_field", 400, "quality_limitation")
            err(await O.call("health.report", dict(report, temperature=80)), "unknown_field", 400,
                "temperature")
            err(await O.call("health.report", report), "not_live", 409)
            assert owner.call("POST", f"/api/v1/streams/{sid}/start").status == 200
            r = await O.call("health.report", report)
            assert r["type"] == "result" and r["data"] == {"accepted": True}, r
            err(await S.call("health.report", report), "forbidden", 403)
            err(await O.call("health.report", dict(report, stream_id=secret)),
                "stream_not_found", 404)
            # at most 10 in 10 s per user
            answers = [await O.call("health.report", report) for _ in range(12)]
            limited = [m for m in answers if m["type"] == "error"]
            assert limited and all(m["data"]["code"] == "rate_limited" for m in limited), answers
            assert limited[0]["data"]["retry_after_s"] >= 1, limited[0]

    run(scenario())
    r = owner.call("GET", f"/api/v1/streams/{sid}/health")
    assert r.status == 200, r
    client = r.json()["client"]
    assert r.json()["live"] is True
    assert {k: client[k] for k in report if k != "stream_id"} == \
        {k: v for k, v in report.items() if k != "stream_id"}, client
    assert isinstance(client["received_at"], int), client


def test_media_settings(srv):
    owner = Account(srv, "hso")
    sid, key = new_stream(owner, settings={"failover_timeout_s": 5, "max_layer": 1})
    path = f"/api/v1/streams/{sid}"
    for bad, field in (({"max_layer": 3}, "settings.max_layer"),
                       ({"max_bitrate_kbps": 50}, "settings.max_bitrate_kbps"),
                       ({"failover_timeout_s": 0}, "settings.failover_timeout_s"),
                       ({"failover_timeout_s": 61}, "settings.failover_timeout_s"),
                       ({"auto_failback": "yes"}, "settings.auto_failback")):
        problem(owner.call("PATCH", path, {"settings": bad}), 400, "invalid_field", field)
    st = owner.call("GET", path).json()["stream"]["settings"]
    assert st["failover_timeout_s"] == 5 and st["max_layer"] == 1, st
    # live: a PATCH reaches the relay at once
    assert whip(srv, sid, key).status == 201
    r = owner.call("PATCH", path, {"settings": {"max_bitrate_kbps": 600, "auto_failback": False,
                                                "failover_timeout_s": 2}})
    assert r.status == 200, r
    m = media_view(owner, sid)["settings"]
    assert m == {"failover_timeout_ms": 2000, "auto_failback": False, "max_bitrate_kbps": 600,
                 "max_publisher_bitrate_kbps": 600, "max_layer": 1}, m
    # null: the node's defaults again
    r = owner.call("PATCH", path, {"settings": {"max_bitrate_kbps": None, "auto_failback": None,
                                                "failover_timeout_s": None, "max_layer": None}})
    assert r.status == 200, r
    assert r.json()["stream"]["settings"]["max_layer"] is None, r.json()
    m = media_view(owner, sid)["settings"]
    assert m == {"failover_timeout_ms": 3000, "auto_failback": True, "max_bitrate_kbps": None,
                 "max_publisher_bitrate_kbps": 8000, "max_layer": None}, m
    # above the node's cap: the node's cap
    assert owner.call("PATCH", path, {"settings": {"max_bitrate_kbps": 20000}}).status == 200
    m = media_view(owner, sid)["settings"]
    assert m["max_publisher_bitrate_kbps"] == 8000, m
