"""Crash consistency: onaird is killed with SIGKILL at random points of a write-heavy
workload, 20 times, on the sqlite and the mongodb backend (CongoDB, which keeps running).

The workload writes through what users and plugins use: documents inserted and a counter
incremented through the storetest plugin's store_* routes (several clients at once), and
accounts registered through /api/v1/auth/register. A write is acknowledged when its
response arrived with success; after every kill the server must start cleanly on the same
data (ready, the plugin started, nothing about corruption in its log) and every
acknowledged write must be there: each inserted document by id and content, each account
able to log in, the counter at least the number of acknowledged increments and at most
that plus the increments still in flight when the process died.
"""
import http.client
import random
import threading
import time

import pytest

from store_support import Congo, StoreClient, assert_storetest_started, storage_config, unique_db

BACKENDS = ["sqlite", "mongodb"]
KILLS = 20
GONE = (OSError, http.client.HTTPException)  # what a request to a killed server raises
PW = "Crash-test-password-2026!"


@pytest.fixture(scope="module")
def congo():
    c = Congo().start()
    yield c
    c.stop()


@pytest.fixture(params=BACKENDS)
def backend_core(request, tmp_path):
    if request.param == "mongodb":
        storage = storage_config("mongodb", uri=request.getfixturevalue("congo").uri,
                                 database=unique_db())
    else:
        storage = storage_config("sqlite", data_dir=str(tmp_path / "data"))
    # a loaded CI machine answers slowly after a kill: no 504 for a slow database here
    storage["timeout_ms"] = 30000
    # cheap password hashing: the workload registers many accounts; every acknowledged one
    # logs in after each kill, all from 127.0.0.1 (the per-address login limit is not tested here)
    return {"storage": storage, "auth": {"password_hash": "interactive"},
            "rate_limits": {"auth.login_ip": "100000/1m"}}


class Workload:
    """Writers in threads until stop; they record what the server acknowledged."""

    def __init__(self, server, round_no):
        self.st = StoreClient(server)
        self.server = server
        self.round = round_no
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.docs = {}        # id -> document acknowledged
        self.accounts = []    # usernames acknowledged
        self.incs_acked = 0
        self.incs_sent = 0
        self.docs_sent = 0
        self.threads = []

    def _insert(self, w):
        i = 0
        while not self.stop.is_set():
            batch = [{"w": w, "r": self.round, "i": i + k, "pad": "x" * random.randint(0, 300)}
                     for k in range(random.randint(1, 5))]
            i += len(batch)
            with self.lock:
                self.docs_sent += len(batch)
            try:
                r = self.st.call("items", "insert", {"docs": batch}, timeout=5)
            except GONE:
                return  # the server is gone
            if r.status != 200:
                continue
            ids = r.json()["ids"]
            with self.lock:
                for _id, doc in zip(ids, batch):
                    self.docs[_id] = doc

    def _inc(self):
        while not self.stop.is_set():
            with self.lock:
                self.incs_sent += 1
            try:
                r = self.st.call("other", "update",
                                 {"filter": {"name": "c"}, "update": {"$inc": {"n": 1}}},
                                 timeout=5)
            except GONE:
                return
            if r.status == 200 and r.json().get("matched") == 1:
                with self.lock:
                    self.incs_acked += 1

    def _register(self):
        i = 0
        while not self.stop.is_set():
            name = f"u{self.round}_{i}"
            i += 1
            try:
                r = self.server.http("POST", "/api/v1/auth/register", timeout=5,
                                     body={"username": name, "email": f"{name}@example.com",
                                           "password": PW})
            except GONE:
                return
            if r.status == 201:
                with self.lock:
                    self.accounts.append(name)

    def start(self):
        targets = [lambda w=w: self._insert(w) for w in range(3)] + [self._inc, self._register]
        self.threads = [threading.Thread(target=t, daemon=True) for t in targets]
        for t in self.threads:
            t.start()

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(15)
            assert not t.is_alive(), "a writer hangs after the kill"


def check_started(s):
    r = s.http("GET", "/readyz")
    assert r.status == 200, f"{r!r}\n{s.log()}"
    assert_storetest_started(s)
    low = s.log().lower()
    for word in ("corrupt", "malformed"):
        assert word not in low, f"'{word}' in the log after a restart:\n{s.log()}"


def items(st, flt):
    """The documents of items that match flt, paged in _id order."""
    got, after = {}, None
    while True:
        body = {"filter": flt, "sort": {"_id": 1}, "limit": 1000}
        if after is not None:
            body["after"] = after
        res = st.ok("items", "find", body)
        for d in res["docs"]:
            got[d.pop("_id")] = d
        after = res["next"]
        if after is None:
            return got


def check_survived(s, flt, docs, accounts, incs_acked, incs_sent):
    """The acknowledged docs (among those matching flt), the counter and the accounts."""
    st = StoreClient(s)
    got = items(st, flt)
    missing = [i for i in docs if i not in got]
    assert not missing, f"{len(missing)} acknowledged documents lost, e.g. {missing[:3]}"
    for i in docs:
        assert got[i] == docs[i], (i, got[i], docs[i])
    counter = st.find_one("other", filter={"name": "c"})
    assert incs_acked <= counter["n"] <= incs_sent, (incs_acked, counter["n"], incs_sent)
    for name in accounts:
        r = s.http("POST", "/api/v1/auth/login", body={"login": name, "password": PW})
        assert r.status == 200, f"acknowledged account {name} cannot log in: {r!r}"


def test_kill9_during_writes(server_factory, backend_core):
    rng = random.Random()
    s = server_factory(plugins={"storetest": {}}, core=backend_core)
    s.start()
    check_started(s)
    StoreClient(s).insert("other", {"name": "c", "n": 0})
    docs, accounts = {}, []
    incs_acked = incs_sent = docs_sent = 0
    for round_no in range(KILLS):
        w = Workload(s, round_no)
        w.start()
        time.sleep(rng.uniform(0.2, 0.8))  # a random point of the workload
        s.kill()                           # SIGKILL
        t0 = time.monotonic()
        w.join()
        t1 = time.monotonic()
        docs.update(w.docs)
        accounts += w.accounts
        incs_acked += w.incs_acked
        incs_sent += w.incs_sent
        docs_sent += w.docs_sent
        s.start()
        check_started(s)
        t2 = time.monotonic()
        # this round's writes now, every round's writes again at the end
        check_survived(s, {"r": round_no}, w.docs, w.accounts, incs_acked, incs_sent)
        print(f"round {round_no}: {len(w.docs)} documents, {len(w.accounts)} accounts, "
              f"{w.incs_acked} increments acknowledged, all there after the restart "
              f"(writers stopped in {t1 - t0:.1f} s, restart {t2 - t1:.1f} s, "
              f"check {time.monotonic() - t2:.1f} s)", flush=True)
        # what was not acknowledged may be there or not, but nothing twice or from elsewhere
        assert StoreClient(s).count("items") <= docs_sent
    check_survived(s, {}, docs, accounts, incs_acked, incs_sent)
    assert len(docs) > KILLS and len(accounts) > 0 and incs_acked > 0, \
        (len(docs), len(accounts), incs_acked)
    assert s.stop() == 0
