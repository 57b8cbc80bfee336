"""Scheduling plugin end to end, on both storage backends: real accounts, the streams
plugin for follows, schedules over REST, the ICS feed parsed with python3-icalendar,
a weekly series across the Europe/Berlin DST change, and reminders / due notices
received over WebSocket with the plugin's test clock (clock.*), across restarts."""
import asyncio
import base64
import datetime as dt
import json
import os
import sys
import time
from zoneinfo import ZoneInfo

import pytest
import websockets

sys.path.insert(0, os.path.dirname(__file__))
from onair_harness import make_token, PLUGIN_DIR  # noqa: E402
from store_support import Congo, storage_config, unique_db  # noqa: E402

import icalendar  # noqa: E402  Debian python3-icalendar (make test installs it)
from dateutil import rrule as du_rrule  # noqa: E402  (python3-dateutil, icalendar's dependency)

BACKENDS = ["sqlite", "mongodb"]
PASSWORD = "correct horse battery staple"
UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def congo():
    c = Congo().start()
    yield c
    c.stop()


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "mongodb":
        return {"storage": storage_config("mongodb", uri=request.getfixturevalue("congo").uri,
                                          database=unique_db())}
    return {"storage": storage_config("sqlite")}


def make_server(server_factory, backend, **sched_config):
    core = dict(backend)
    core["auth"] = {"password_hash": "interactive"}
    return server_factory(plugins={
        "streams": {"path": os.path.join(PLUGIN_DIR, "streams.so")},
        "scheduling": {"path": os.path.join(PLUGIN_DIR, "scheduling.so"),
                       "config": sched_config},
    }, core=core)


def claims(token):
    p = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


class Account:
    def __init__(self, srv, name):
        self.srv = srv
        self.username = name + base64.b32encode(os.urandom(5)).decode().lower()
        r = srv.http("POST", "/api/v1/auth/register",
                     {"username": self.username, "email": self.username + "@example.org",
                      "password": PASSWORD})
        assert r.status in (200, 201), r
        self.token = r.json()["access_token"]
        self.id = claims(self.token)["sub"]

    def login(self):
        r = self.srv.http("POST", "/api/v1/auth/login",
                          {"login": self.username, "password": PASSWORD})
        assert r.status == 200, r
        self.token = r.json()["access_token"]

    def call(self, method, path, body=None, **kw):
        return self.srv.http(method, path, body, token=self.token, **kw)


def problem(r, status, code, field=None):
    """The problem+json answer r: status, code and, for body mistakes, the field named."""
    assert r.status == status, r
    assert (r.header("Content-Type") or "").startswith("application/problem+json"), r
    p = r.json()
    assert p["code"] == code and p["status"] == status and p["detail"], p
    assert p.get("field") == field, p
    return p


def iso(d):
    return d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def future(hours=48):
    return iso(dt.datetime.now(UTC) + dt.timedelta(hours=hours))


# ---- REST ---------------------------------------------------------------------------------
def test_crud_lists_and_permissions(server_factory, backend):
    srv = make_server(server_factory, backend).start()
    alice, bob = Account(srv, "alice"), Account(srv, "bob")
    body = {"title": "Morning coffee stream", "category": "talk", "tags": ["coffee", "chat"],
            "start": future(48), "tz": "Europe/Berlin", "duration_min": 45}
    assert srv.http("POST", "/api/v1/schedules", body).status == 401
    # scheduling becomes a stream with a key when due: the streamer role is needed
    viewer = make_token(sub="viewer-only", roles=["viewer"])
    problem(srv.http("POST", "/api/v1/schedules", body, token=viewer), 403, "forbidden")
    r = alice.call("POST", "/api/v1/schedules", body)
    assert r.status == 201, r
    s = r.json()
    assert r.header("Location") == "/api/v1/schedules/" + s["id"]
    assert s["owner"] == alice.id and s["title"] == body["title"] and s["tz"] == "Europe/Berlin"
    assert s["recurrence"] is None and s["cancelled"] is False and s["duration_min"] == 45
    assert s["next_occurrence"] is not None and s["tags"] == ["coffee", "chat"]
    sid = s["id"]
    # public read
    g = srv.http("GET", "/api/v1/schedules/" + sid)
    assert g.status == 200 and g.json()["title"] == body["title"]
    problem(srv.http("GET", "/api/v1/schedules/000000000000000000000000"), 404,
            "schedule_not_found")
    problem(srv.http("GET", "/api/v1/schedules/nope"), 404, "schedule_not_found")
    # only the owner changes it
    problem(bob.call("PATCH", "/api/v1/schedules/" + sid, {"title": "mine now"}), 403,
            "forbidden")
    problem(bob.call("DELETE", "/api/v1/schedules/" + sid), 403, "forbidden")
    r = alice.call("PATCH", "/api/v1/schedules/" + sid, {"title": "Coffee, v2", "tags": []})
    assert r.status == 200, r
    assert r.json()["title"] == "Coffee, v2" and r.json()["tags"] == []
    assert r.json()["start"] == body["start"]  # untouched fields stay
    problem(alice.call("PATCH", "/api/v1/schedules/" + sid, {"owner": bob.id}), 400,
            "unknown_field", "owner")
    # a second one for the lists, and one of bob's
    r2 = alice.call("POST", "/api/v1/schedules", dict(body, title="Evening", start=future(72)))
    assert r2.status == 201
    assert bob.call("POST", "/api/v1/schedules", dict(body, title="Bob's")).status == 201
    mine = alice.call("GET", "/api/v1/schedules?mine=1").json()
    assert [i["title"] for i in mine["items"]] == ["Coffee, v2", "Evening"]
    assert srv.http("GET", "/api/v1/schedules?mine=1").status == 401
    page = srv.http("GET", f"/api/v1/schedules?owner={alice.id}&limit=1").json()
    assert len(page["items"]) == 1 and page["next"]
    page2 = srv.http("GET", f"/api/v1/schedules?owner={alice.id}&limit=1&after={page['next']}")
    assert [i["title"] for i in page2.json()["items"]] == ["Evening"]
    problem(srv.http("GET", "/api/v1/schedules"), 400, "invalid_request")
    problem(srv.http("GET", f"/api/v1/schedules?owner={alice.id}&limit=0"), 400, "invalid_limit")
    # cancel the series: gone from lists, still readable as cancelled
    r = alice.call("DELETE", "/api/v1/schedules/" + sid)
    assert r.status == 200 and r.json()["cancelled"] is True and r.json()["next_occurrence"] is None
    assert [i["title"] for i in alice.call("GET", "/api/v1/schedules?mine=1").json()["items"]] == [
        "Evening"]
    inc = alice.call("GET", "/api/v1/schedules?mine=1&include_cancelled=1").json()["items"]
    assert len(inc) == 2
    problem(alice.call("PATCH", "/api/v1/schedules/" + sid, {"title": "x"}), 409,
            "schedule_cancelled")
    up = srv.http("GET", "/api/v1/schedules/upcoming").json()["items"]
    assert sorted(i["title"] for i in up) == ["Bob's", "Evening"]
    assert srv.stop() == 0


def test_bad_input(server_factory, backend):
    srv = make_server(server_factory, backend).start()
    a = Account(srv, "carol")
    ok = {"title": "t", "start": future(), "tz": "America/New_York", "duration_min": 30}

    def post(**change):
        """POST ok with members changed (None sends null) or left out (...)."""
        b = dict(ok)
        for k, v in change.items():
            if v is ...:
                b.pop(k, None)
            else:
                b[k] = v
        return a.call("POST", "/api/v1/schedules", b)

    # Body mistakes are missing_field / invalid_field / unknown_field with the field named
    # (the host checks the declared schema); the plugin's own rules keep their codes and
    # name the field too.
    problem(post(start=iso(dt.datetime.now(UTC) - dt.timedelta(minutes=5))), 400,
            "start_in_past", "start")
    for bad in ("2027-13-01T10:00:00Z", "2027-02-30T10:00:00Z", "tomorrow", "2027-03-20 19:00",
                "2027-03-20T19:00:00", 12345, None):
        problem(post(start=bad), 400, "invalid_field", "start")
    problem(post(start=...), 400, "missing_field", "start")
    problem(post(title=...), 400, "missing_field", "title")
    for bad in ("Mars/Olympus_Mons", "../../etc/passwd", "Europe/", ""):
        problem(post(tz=bad), 400, "invalid_time_zone", "tz")
    problem(post(tz=5), 400, "invalid_field", "tz")
    problem(post(recurrence={}), 400, "missing_field", "recurrence.days")
    problem(post(recurrence={"days": []}), 400, "invalid_field", "recurrence.days")
    problem(post(recurrence={"days": "MO"}), 400, "invalid_field", "recurrence.days")
    problem(post(recurrence={"days": ["XX"]}), 400, "invalid_field", "recurrence.days")
    problem(post(recurrence={"days": ["MO", "MO"]}), 400, "invalid_field", "recurrence.days")
    problem(post(recurrence={"days": ["MO"], "until": "someday"}), 400, "invalid_field",
            "recurrence.until")
    problem(post(recurrence={"days": ["MO"], "every": 2}), 400, "unknown_field",
            "recurrence.every")
    problem(post(recurrence={"days": ["MO"], "until": "2020-01-01"}), 400, "until_before_start",
            "recurrence.until")
    problem(post(recurrence=[]), 400, "invalid_field", "recurrence")
    local = dt.datetime.fromisoformat(ok["start"].replace("Z", "+00:00")).astimezone(
        ZoneInfo(ok["tz"]))
    next_day = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"][(local.weekday() + 1) % 7]
    problem(post(recurrence={"days": [next_day], "until": local.date().isoformat()}), 400,
            "no_occurrences", "recurrence")
    problem(post(title=""), 400, "invalid_field", "title")
    problem(post(title="x" * 141), 400, "invalid_field", "title")
    problem(post(title="bell\x07"), 400, "invalid_field", "title")
    problem(post(title=None), 400, "invalid_field", "title")
    problem(post(duration_min=0), 400, "invalid_field", "duration_min")
    problem(post(duration_min=1441), 400, "invalid_field", "duration_min")
    problem(post(duration_min="60"), 400, "invalid_field", "duration_min")
    problem(post(duration_min=60.5), 400, "invalid_field", "duration_min")
    problem(post(tags=["a"] * 11), 400, "invalid_field", "tags")
    problem(post(tags=["ok", "x" * 33]), 400, "invalid_field", "tags")
    problem(post(tags=["ok", 3]), 400, "invalid_field", "tags")
    problem(post(category=""), 400, "invalid_field", "category")
    problem(post(category=["talk"]), 400, "invalid_field", "category")
    problem(post(color="red"), 400, "unknown_field", "color")
    r = a.call("POST", "/api/v1/schedules", "not json", headers={"Content-Type":
                                                               "application/json"})
    problem(r, 400, "invalid_json")
    assert post(title="é" * 140).status == 201  # characters, not bytes
    # null means "none" where the model allows it
    r = post(category=None, tags=None, recurrence=None)
    assert r.status == 201, r
    assert r.json()["category"] is None and r.json()["tags"] == [] and r.json()["recurrence"] is None
    sid = r.json()["id"]
    cancel = f"/api/v1/schedules/{sid}/cancel"
    problem(a.call("POST", cancel, {"occurrence": "yesterday"}), 400, "invalid_field",
            "occurrence")
    problem(a.call("POST", cancel, {"occurrence": 5}), 400, "invalid_field", "occurrence")
    problem(a.call("POST", cancel, {}), 400, "missing_field", "occurrence")
    problem(a.call("POST", cancel, {"occurrence": ok["start"], "why": "x"}), 400,
            "unknown_field", "why")
    problem(a.call("POST", cancel, {"occurrence": future(100)}), 400, "not_an_occurrence",
            "occurrence")
    patch = f"/api/v1/schedules/{sid}"
    problem(a.call("PATCH", patch, {"start": iso(dt.datetime.now(UTC) - dt.timedelta(hours=1))}),
            400, "start_in_past", "start")
    problem(a.call("PATCH", patch, {"tz": "Nowhere/City"}), 400, "invalid_time_zone", "tz")
    problem(a.call("PATCH", patch, {"duration_min": "90"}), 400, "invalid_field", "duration_min")
    problem(a.call("PATCH", patch, {"title": None}), 400, "invalid_field", "title")
    problem(a.call("PATCH", patch, {"recurrence": {"days": ["MO"], "until": 20270101}}), 400,
            "invalid_field", "recurrence.until")
    problem(a.call("PATCH", patch, {"owner": a.id}), 400, "unknown_field", "owner")
    # a body mistake is answered before the schedule is looked up
    problem(a.call("PATCH", "/api/v1/schedules/000000000000000000000000", {"x": 1}), 400,
            "unknown_field", "x")
    # PATCH turns the one-off into a series and back (null removes the recurrence)
    r = a.call("PATCH", patch, {"recurrence": {"days": ["SU", "MO"], "until": None}})
    assert r.status == 200 and r.json()["recurrence"] == {"days": ["MO", "SU"], "until": None}, r
    r = a.call("PATCH", patch, {"recurrence": None})
    assert r.status == 200 and r.json()["recurrence"] is None, r
    problem(srv.http("GET", "/api/v1/schedules/upcoming?from=soon"), 400, "invalid_from")
    problem(srv.http("GET", "/api/v1/schedules/upcoming?after=zzz"), 400, "invalid_cursor")
    problem(srv.http("GET", "/api/v1/users/000000000000000000000000/schedule.ics"), 404,
            "user_not_found")
    # nothing was stored by the refused requests
    assert len(a.call("GET", "/api/v1/schedules?mine=1").json()["items"]) == 2
    assert srv.stop() == 0


# ---- a weekly series across the DST change, upcoming paging, ICS -----------------------
def test_weekly_series_across_dst_upcoming_and_ics(server_factory, backend):
    srv = make_server(server_factory, backend, clock={
        "origin_ms": int(time.time() * 1000), "virtual_origin": "2027-03-20T08:00:00Z",
        "scale": 1}).start()
    dana = Account(srv, "dana")
    title = "Weekend jam; live, with \\backslash\\ and a very long title: " + "ä" * 40
    r = dana.call("POST", "/api/v1/schedules", {
        "title": title, "category": "music", "tags": ["jam"],
        "start": "2027-03-20T19:00:00+01:00", "tz": "Europe/Berlin", "duration_min": 90,
        "recurrence": {"days": ["SU", "SA"], "until": "2027-04-10"}})
    assert r.status == 201, r
    s = r.json()
    assert s["start_local"] == "2027-03-20T19:00"
    assert s["recurrence"] == {"days": ["SA", "SU"], "until": "2027-04-10"}
    assert s["next_occurrence"] == "2027-03-20T18:00:00Z"
    one = dana.call("POST", "/api/v1/schedules", {
        "title": "Q&A", "start": "2027-03-25T12:00:00Z", "tz": "America/New_York",
        "duration_min": 30}).json()
    want = ["2027-03-20T18:00:00Z", "2027-03-21T18:00:00Z", "2027-03-25T12:00:00Z",
            "2027-03-27T18:00:00Z", "2027-03-28T17:00:00Z", "2027-04-03T17:00:00Z",
            "2027-04-04T17:00:00Z", "2027-04-10T17:00:00Z"]
    # paging through the platform-wide list, three at a time
    got, after = [], None
    for _ in range(5):
        q = "/api/v1/schedules/upcoming?limit=3" + (f"&after={after}" if after else "")
        page = srv.http("GET", q).json()
        got += page["items"]
        after = page["next"]
        if not after:
            break
    assert [i["start"] for i in got] == want
    series = [i for i in got if i["schedule_id"] == s["id"]]
    assert all(i["start_local"].endswith("T19:00") for i in series)  # same wall time
    assert series[0]["end"] == "2027-03-20T19:30:00Z"
    q = srv.http("GET", "/api/v1/schedules/upcoming?from=2027-03-28T00:00:00Z&limit=2").json()
    assert [i["start"] for i in q["items"]] == want[4:6]
    # cancel one occurrence
    problem(dana.call("POST", f"/api/v1/schedules/{s['id']}/cancel",
                      {"occurrence": "2027-04-03T18:00:00Z"}), 400, "not_an_occurrence",
            "occurrence")
    r = dana.call("POST", f"/api/v1/schedules/{s['id']}/cancel",
                  {"occurrence": "2027-04-03T19:00:00+02:00"})
    assert r.status == 200 and r.json()["cancelled_occurrences"] == ["2027-04-03T17:00:00Z"]
    got = srv.http("GET", "/api/v1/schedules/upcoming?limit=100").json()["items"]
    assert [i["start"] for i in got] == [w for w in want if w != "2027-04-03T17:00:00Z"]

    # the ICS feed
    r = srv.http("GET", f"/api/v1/users/{dana.id}/schedule.ics")
    assert r.status == 200, r
    assert r.header("Content-Type") == "text/calendar; charset=utf-8"
    raw = r.body.encode("utf-8")
    assert raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= 75 for line in raw.split(b"\r\n")), "lines must be folded"
    cal = icalendar.Calendar.from_ical(raw)
    assert str(cal["VERSION"]) == "2.0" and "onair" in str(cal["PRODID"])
    assert {str(t["TZID"]) for t in cal.walk("VTIMEZONE")} == {"Europe/Berlin",
                                                               "America/New_York"}
    events = {str(e["UID"]): e for e in cal.walk("VEVENT")}
    assert set(events) == {s["id"] + "@onair.scheduling", one["id"] + "@onair.scheduling"}
    ev = events[s["id"] + "@onair.scheduling"]
    assert str(ev["SUMMARY"]) == title
    assert ev["DTSTAMP"].dt.tzinfo is not None
    start = ev["DTSTART"].dt
    assert start.replace(tzinfo=None) == dt.datetime(2027, 3, 20, 19, 0)
    assert str(ev["DTSTART"].params["TZID"]) == "Europe/Berlin"
    assert ev["DURATION"].dt == dt.timedelta(minutes=90)
    rule = ev["RRULE"]
    assert rule["FREQ"] == ["WEEKLY"] and sorted(rule["BYDAY"]) == ["SA", "SU"]
    until = rule["UNTIL"][0]
    assert until.tzinfo is not None and until.date() == dt.date(2027, 4, 10)
    exdates = [d.dt for d in (ev["EXDATE"] if isinstance(ev["EXDATE"], list) else [ev["EXDATE"]])
               for d in d.dts]
    assert [e.astimezone(UTC) for e in exdates] == [dt.datetime(2027, 4, 3, 17, 0, tzinfo=UTC)]
    # expand the RRULE like a calendar app: the same instants as /upcoming
    # (zoneinfo, not the parser's pytz tzinfo: dateutil needs wall-clock arithmetic)
    local = start.replace(tzinfo=None).replace(tzinfo=ZoneInfo("Europe/Berlin"))
    occ = du_rrule.rrulestr(ev["RRULE"].to_ical().decode(), dtstart=local)
    ex = {e.astimezone(UTC) for e in exdates}
    expanded = [iso(o) for o in occ if o.astimezone(UTC) not in ex]
    assert expanded == [i["start"] for i in got if i["schedule_id"] == s["id"]]
    q_a = events[one["id"] + "@onair.scheduling"]
    assert "RRULE" not in q_a and str(q_a["SUMMARY"]) == "Q&A"
    assert q_a["DTSTART"].dt.astimezone(UTC) == dt.datetime(2027, 3, 25, 12, 0, tzinfo=UTC)
    # a cancelled series leaves the feed; an unknown user has none
    assert dana.call("DELETE", f"/api/v1/schedules/{one['id']}").status == 200
    cal = icalendar.Calendar.from_ical(
        srv.http("GET", f"/api/v1/users/{dana.id}/schedule.ics").body.encode())
    assert len(cal.walk("VEVENT")) == 1
    assert srv.stop() == 0


# ---- reminders and due notices with the test clock, across restarts ------------------------
SCALE = 600  # 10 virtual minutes per real second


class Inbox:
    """Collects every WebSocket message of one signed-in connection."""

    def __init__(self, url, token):
        self.url, self.token, self.msgs, self.task, self.ws = url, token, [], None, None

    async def open(self):
        self.ws = await websockets.connect(
            self.url, extra_headers={"Authorization": "Bearer " + self.token})
        self.task = asyncio.ensure_future(self._read())
        await asyncio.sleep(0.2)  # the core subscribes us to user.<id> once authenticated
        return self

    async def _read(self):
        try:
            async for m in self.ws:
                self.msgs.append(json.loads(m))
        except websockets.ConnectionClosed:
            pass

    async def close(self):
        await self.ws.close()
        await self.task

    def of(self, type_):
        return [m for m in self.msgs if m.get("type") == type_]


async def wait_for(pred, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.05)
    return pred()


def test_reminders_and_due_once_across_restarts(server_factory, backend):
    origin = int(time.time() * 1000)
    vorigin = dt.datetime(2030, 1, 7, 10, 0, tzinfo=UTC)

    def real_at(virtual_minutes):  # wall-clock seconds at which the virtual clock shows it
        return origin / 1000 + virtual_minutes * 60 / SCALE

    srv = make_server(server_factory, backend, reminder_offsets_min=["10", "60"],
                      resume_delay_ms=1500,
                      clock={"origin_ms": origin, "virtual_origin": iso(vorigin),
                             "scale": SCALE}).start()
    owner, fan = Account(srv, "owner"), Account(srv, "fan")
    r = fan.call("POST", f"/api/v1/users/{owner.id}/follow")
    assert r.status in (200, 201, 204), r
    # A: starts at +60 virtual min (6 s): reminder:10 at 5 s (reminder:60 was before it was
    # created: never sent). B: starts at +160 min (16 s): reminder:60 at 10 s falls due
    # while onaird is down, reminder:10 at 15 s; it runs 120 min (until 28 s).
    a = owner.call("POST", "/api/v1/schedules", {
        "title": "A", "category": "games", "tags": ["x"],
        "start": iso(vorigin + dt.timedelta(minutes=60)), "tz": "UTC", "duration_min": 60})
    b = owner.call("POST", "/api/v1/schedules", {
        "title": "B", "start": iso(vorigin + dt.timedelta(minutes=160)), "tz": "Europe/Paris",
        "duration_min": 120})
    assert a.status == 201 and b.status == 201, (a, b)
    a, b = a.json(), b.json()

    def reminders(box, sid=None):
        return [m for m in box.of("schedule.reminder")
                if sid is None or m["data"]["schedule_id"] == sid]

    async def phase1():
        fan_box = await Inbox(srv.ws_url, fan.token).open()
        own_box = await Inbox(srv.ws_url, owner.token).open()
        assert await wait_for(lambda: reminders(fan_box, a["id"]), 10), fan_box.msgs
        m = reminders(fan_box, a["id"])[0]
        assert m["topic"] == "user." + fan.id
        assert m["data"]["minutes_before"] == 10
        assert m["data"]["occurrence_start"] == iso(vorigin + dt.timedelta(minutes=60))
        assert m["data"]["schedule"]["title"] == "A"
        assert await wait_for(lambda: own_box.of("schedule.due"), 10), own_box.msgs
        due = own_box.of("schedule.due")[0]["data"]
        assert due["schedule_id"] == a["id"] and due["title"] == "A"
        assert due["category"] == "games" and due["tags"] == ["x"]
        # the streams plugin heard schedule.due on the bus and made the stream ready to go
        # live: the owner gets it, with its key, on the user topic (shown once)
        assert await wait_for(lambda: own_box.of("streams.created"), 10), own_box.msgs
        created = own_box.of("streams.created")[0]["data"]
        assert created["stream"]["title"] == "A" and created["stream"]["status"] == "created"
        assert created["stream_key"].startswith("sk_")
        await asyncio.sleep(0.5)
        assert len(reminders(fan_box, a["id"])) == 1  # once, and not the 60-minute one
        assert not reminders(own_box)  # the owner is not their own follower
        assert len(own_box.of("schedule.due")) == 1
        await fan_box.close()
        await own_box.close()

    asyncio.run(phase1())
    assert time.time() < real_at(100), "phase 1 ran too slowly for the test clock"
    assert srv.stop() == 0
    # onaird is down while B's 60-minute reminder falls due (virtual +100 min)
    time.sleep(max(0, real_at(105) - time.time()))
    srv.start()
    fan.login()
    owner.login()

    async def phase2():
        fan_box = await Inbox(srv.ws_url, fan.token).open()
        own_box = await Inbox(srv.ws_url, owner.token).open()
        # the 60-minute reminder fell due while onaird was down: it comes once, late; the
        # 10-minute one comes too. Their order depends on how long the restart took.
        assert await wait_for(lambda: len(reminders(fan_box, b["id"])) >= 2, 20), fan_box.msgs
        minutes = sorted(m["data"]["minutes_before"] for m in reminders(fan_box, b["id"]))
        assert minutes == [10, 60], fan_box.msgs
        assert await wait_for(lambda: own_box.of("schedule.due"), 15), own_box.msgs
        assert own_box.of("schedule.due")[0]["data"]["schedule_id"] == b["id"]
        await asyncio.sleep(0.5)
        assert len(reminders(fan_box)) == 2 and len(own_box.of("schedule.due")) == 1
        assert not reminders(fan_box, a["id"])  # nothing of A again
        await fan_box.close()
        await own_box.close()

    asyncio.run(phase2())
    assert srv.stop() == 0
    # a second restart while B is still running: nothing is sent twice
    srv.start()

    async def phase3():
        fan_box = await Inbox(srv.ws_url, fan.token).open()
        own_box = await Inbox(srv.ws_url, owner.token).open()
        await asyncio.sleep(3.0)  # past resume_delay_ms, B still running
        assert fan_box.of("schedule.reminder") == [] and own_box.of("schedule.due") == []
        await fan_box.close()
        await own_box.close()

    asyncio.run(phase3())
    assert time.time() < real_at(275), "phase 3 ran outside B's occurrence"
    assert srv.stop() == 0
