"""The document store when things go wrong: a killed server, a corrupt or unwritable
database, a database that goes away and comes back; and moving data between backends
with `onaird --export` / `--import`."""
import json
import os
import subprocess
import time

import pytest

from onair_harness import ONAIRD, request
from store_support import (Congo, MessageLimitProxy, StoreClient, assert_storetest_started,
                           storage_config, unique_db)


def onaird(*args, timeout=120):
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    return subprocess.run([ONAIRD, *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def no_sanitizer_report(text):
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in text, text[-6000:]


@pytest.fixture
def congo():
    c = Congo().start()
    yield c
    c.stop()


# ---- durability ----------------------------------------------------------------------------
def test_acknowledged_inserts_survive_sigkill(server_factory):
    s = server_factory(plugins={"storetest": {}}).start()
    data_dir = os.path.join(s.dir, "data")
    acked = []
    conn = s.connection(timeout=30)
    try:
        for i in range(200):
            r = request(conn, "POST", "/api/v1/storetest/items/insert",
                        {"docs": {"i": i, "name": f"d{i}"}})
            assert r.status == 200, r
            acked.append(r.json()["ids"][0])
    finally:
        conn.close()
    s.kill()  # SIGKILL: no shutdown, no checkpoint
    assert s.proc.returncode == -9
    s2 = server_factory(plugins={"storetest": {}},
                        core={"storage": {"data_dir": data_dir}}).start()
    st = StoreClient(s2)
    assert st.count("items") == 200
    docs = st.find("items", sort={"i": 1})
    assert [d["_id"] for d in docs] == acked
    assert [d["i"] for d in docs] == list(range(200))


# ---- a database that cannot be opened ----------------------------------------------------
def _expect_startup_failure(s, *patterns):
    s.start(wait=False)
    try:
        rc = s.proc.wait(60)
    except subprocess.TimeoutExpired:
        s.kill()
        raise AssertionError("onaird kept running:\n" + s.log())
    s._reader.join(5)
    log = s.log()
    assert rc == 1, f"exit {rc}:\n{log}"
    assert "listening on" not in log, log
    no_sanitizer_report(log)
    lines = [l for l in log.splitlines() if all(p in l.lower() for p in patterns)]
    assert len(lines) == 1, f"want one line with {patterns}:\n{log}"
    return lines[0]


def test_corrupt_sqlite_file_refuses_to_start(server_factory):
    s = server_factory(plugins={"storetest": {}})
    data_dir = os.path.join(s.dir, "data")
    os.makedirs(data_dir)
    db = os.path.join(data_dir, "onair.db")
    with open(db, "wb") as f:
        f.write(b"this is certainly not an SQLite database\n" * 200)
    before = open(db, "rb").read()
    line = _expect_startup_failure(s, "not a database")
    assert "onair.db" in line, line
    assert open(db, "rb").read() == before  # and it was left alone


def test_unwritable_data_dir_refuses_to_start(server_factory, tmp_path):
    # a data directory that cannot be created: its parent is a regular file
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    s = server_factory(plugins={"storetest": {}},
                       core={"storage": {"data_dir": str(blocker / "data")}})
    line = _expect_startup_failure(s, str(blocker / "data").lower())
    assert "storage" in line.lower(), line
    if os.geteuid() != 0:  # root writes anywhere: only an unprivileged user can test modes
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            s = server_factory(plugins={"storetest": {}},
                               core={"storage": {"data_dir": str(ro)}})
            line = _expect_startup_failure(s, str(ro).lower())
        finally:
            ro.chmod(0o700)


# ---- the database goes away and comes back -----------------------------------------------
def _poll(fn, timeout, what):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last[0]:
            return last[1]
        time.sleep(0.25)
    raise AssertionError(f"{what} within {timeout} s; last: {last[1]!r}")


def test_mongodb_outage_and_recovery(server_factory, congo):
    s = server_factory(plugins={"storetest": {}},
                       core={"storage": storage_config("mongodb", uri=congo.uri,
                                                       database=unique_db(), timeout_ms=1000)})
    s.start()
    st = StoreClient(s)
    st.insert("items", {"name": "before"})
    assert st.count("items") == 1
    assert s.http("GET", "/readyz").status == 200

    congo.stop()
    t0 = time.time()

    def failing():
        r = st.call("items", "find", {}, timeout=30)
        return r.status != 200, r

    r = _poll(failing, 20, "a request fails while the database is down")
    assert r.status == 503, r
    assert r.header("Retry-After"), r
    assert r.json()["code"] == "unavailable", r
    assert time.time() - t0 < 20

    def unready():
        r = s.http("GET", "/readyz")
        return r.status == 503, r

    r = _poll(unready, 20, "/readyz reports the outage")
    assert r.json() == {"status": "storage_unavailable"}, r
    # writes fail the same way, quickly enough for a client to retry
    r = st.call("items", "insert", {"docs": {"name": "during"}}, timeout=30)
    assert r.status == 503 and r.header("Retry-After"), r
    assert s.proc.poll() is None

    # a new (empty) CongoDB on the same port: onaird reconnects by itself
    congo.start()

    def working():
        r = st.call("items", "insert", {"docs": {"name": "after"}}, timeout=30)
        return r.status == 200, r

    _poll(working, 45, "requests succeed again after the database came back")
    assert [d["name"] for d in st.find("items")] == ["after"]

    def ready():
        r = s.http("GET", "/readyz")
        return r.status == 200, r

    _poll(ready, 20, "/readyz is ready again")
    assert s.proc.poll() is None, s.log()
    assert s.stop() == 0  # checks the sanitizers too


@pytest.mark.parametrize("mode", ["swallow", "close"])
def test_mongodb_one_failed_command_is_not_an_outage(server_factory, congo, mode):
    """One command that does not get through while the server answers everything else: a
    proxy swallows messages over 1 MiB (no reply comes within storage.timeout_ms, libmongoc's
    'Failed to send "insert" command' as with a large message to a server that reads it too
    slowly) or closes the connection on them (a server or proxy with a smaller message limit).
    That command fails with 504 timeout (after storage.timeout_ms) or 500 internal (the
    connection closed at once), not with 503 unavailable; /readyz stays ready and the health
    check never sees an outage. (A server that is really down is
    test_mongodb_outage_and_recovery.)"""
    proxy = MessageLimitProxy(congo.port, limit=1024 * 1024, mode=mode)
    # swallowed: no reply within timeout_ms; closed: fails at once, long before timeout_ms
    status, code, timeout_ms = (504, "timeout", 1000) if mode == "swallow" else \
        (500, "internal", 5000)

    def failed(r):
        assert r.status == status, r
        p = r.json()
        assert p["code"] == code and r.header("Retry-After") is None, p
        assert "Failed to send" in p["detail"] and "answers ping" in p["detail"], p
        return p

    try:
        s = server_factory(plugins={"storetest": {}},
                           core={"storage": storage_config("mongodb", uri=proxy.uri,
                                                           database=unique_db(),
                                                           timeout_ms=timeout_ms)})
        s.start()
        st = StoreClient(assert_storetest_started(s))
        st.insert("items", {"name": "small"})
        assert s.http("GET", "/readyz").status == 200

        big = {"name": "big", "blob": "z" * (2 * 1024 * 1024)}
        p = failed(st.call("items", "insert", {"docs": big}))
        assert "1 document, " in p["detail"], p
        assert proxy.refused and min(proxy.refused) > 2 * 1024 * 1024, proxy.refused
        # right after it: still ready, and the store works (through the same proxy)
        r = s.http("GET", "/readyz")
        assert r.status == 200, r
        assert st.count("items") == 1  # the big document never reached the server
        assert st.insert("items", {"name": "after"})
        assert sorted(d["name"] for d in st.find("items")) == ["after", "small"]
        assert s.http("GET", "/readyz").status == 200
        # a read fails the same way: a filter over 1 MiB does not get through either
        failed(st.call("items", "count", {"filter": {"name": "q" * (1100 * 1024)}}))
        assert s.http("GET", "/readyz").status == 200
        assert st.count("items") == 2
        log = s.log()
        # the health check never saw the store down (it logs both transitions)
        assert "backend unavailable" not in log and "available again" not in log, log
        assert s.stop() == 0
    finally:
        proxy.close()


# ---- export from sqlite, import into mongodb -----------------------------------------------
# items has a unique index on email: MongoDB (and CongoDB when it builds the index after
# the import) allows at most one document without that field, so only one lacks it.
VARIED = [
    {"name": "plain", "n": 1},
    {"name": "nested", "n": 2, "a": {"b": {"c": [1, 2, {"d": None}]}}, "tags": ["x", "y"],
     "email": "n@example.org"},
    {"name": "types", "n": 3, "f": 1.25, "neg": -7, "big": 9007199254740993, "t": True,
     "fa": False, "nul": None, "empty_o": {}, "empty_a": [], "email": "t@example.org"},
    {"name": "unicode \u00e9\u2603\U0001F600", "n": 4, "s": "line\nbreak \"q\" \\ \t",
     "email": "u@example.org"},
    {"_id": "00000000000000000000abcd", "name": "given id", "n": 5, "email": "g@example.org"},
]


def test_export_sqlite_import_mongodb(server_factory, congo, tmp_path):
    s = server_factory(plugins={"storetest": {}}).start()
    st = StoreClient(s)
    st.insert("items", VARIED)
    st.insert("other", [{"k": i, "v": "x" * i} for i in range(50)])
    st.insert("events", {"expires_at": int(time.time() * 1000) + 3_600_000, "kind": "e"})
    before = {c: st.find(c, sort={"_id": 1}) for c in ("items", "other", "events")}
    assert s.stop() == 0

    out = tmp_path / "export"
    r = onaird("-c", s.config_path, "--export", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    no_sanitizer_report(r.stdout + r.stderr)
    for c in ("items", "other", "events"):
        path = out / f"storetest.{c}.jsonl"
        lines = path.read_text().splitlines()
        assert sorted(json.loads(l)["_id"] for l in lines) == [d["_id"] for d in before[c]], c
    # schema versions travel with the data
    versions = json.loads((out / "_versions.json").read_text())
    assert versions["storetest.items"] == 1 and versions["storetest.other"] == 1

    m = server_factory(plugins={"storetest": {}},
                       core={"storage": storage_config("mongodb", uri=congo.uri,
                                                       database=unique_db())})
    r = onaird("-c", m.config_path, "--import", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    no_sanitizer_report(r.stdout + r.stderr)
    m.start()
    mt = StoreClient(assert_storetest_started(m))
    for c in ("items", "other", "events"):
        assert mt.find(c, sort={"_id": 1}) == before[c], c
    # the imported items are at version 1: a version 2 start migrates them
    assert m.stop() == 0
    m.plugins["storetest"] = {"config": {"items_version": 2}}
    m.write_config()
    m.start()
    mt = StoreClient(assert_storetest_started(m))
    assert all(d.get("migrated_from") == 1 for d in mt.find("items"))
    # the imported collections work as usual (indexes, queries)
    assert [d["name"] for d in mt.find("items", filter={"n": {"$gte": 4}}, sort={"n": 1})] == \
        [VARIED[3]["name"], "given id"]
    assert mt.count("other", {"k": {"$lt": 10}}) == 10
    # importing a file that is not a dump fails clearly
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "storetest.other.jsonl").write_text('{"_id": "0123456789abcdef01234567"}\nnot json\n')
    assert m.stop() == 0
    r = onaird("-c", m.config_path, "--import", str(bad))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "storetest.other.jsonl:2" in r.stdout + r.stderr, r.stdout + r.stderr
