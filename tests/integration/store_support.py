"""Helpers for the storage tests (test_store.py, test_store_faults.py): CongoDB, the
MongoDB-wire-compatible test server in tests/mongo, and a client for the storetest
plugin's REST view of the document store.

CongoDB is installed by `cd tests/mongo && npm ci`. Without it the mongodb tests are
skipped, unless ONAIR_REQUIRE_MONGO=1 (CI), which makes them fail instead.
"""
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid

import pytest

from onair_harness import free_port

SOURCE_DIR = os.environ.get("ONAIR_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
MONGO_DIR = os.path.join(SOURCE_DIR, "tests", "mongo")
CONGO_JS = os.path.join(MONGO_DIR, "congo.mjs")
HEX24 = re.compile(r"^[0-9a-f]{24}$")


def require_congo():
    """Skip (or fail under ONAIR_REQUIRE_MONGO=1) when CongoDB cannot run here."""
    reason = None
    if not os.path.isdir(os.path.join(MONGO_DIR, "node_modules")):
        reason = ("CongoDB is not installed (tests/mongo/node_modules is missing): "
                  "run `cd tests/mongo && npm ci` to test the mongodb backend")
    elif not shutil.which("node"):
        reason = "node is not installed: the mongodb backend tests need it for CongoDB"
    if reason:
        if os.environ.get("ONAIR_REQUIRE_MONGO") == "1":
            pytest.fail(reason + " (ONAIR_REQUIRE_MONGO=1)", pytrace=False)
        pytest.skip(reason)


class Congo:
    """One CongoDB process (in memory) on 127.0.0.1."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.proc = None
        self.lines = []
        self._lock = threading.Lock()

    def start(self, timeout=30):
        require_congo()
        self.lines = []
        self.proc = subprocess.Popen(["node", CONGO_JS, str(self.port)], cwd=MONGO_DIR,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, errors="replace")
        threading.Thread(target=self._read, daemon=True).start()
        want = f"congodb listening on 127.0.0.1:{self.port}"
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self._lock:
                if any(want in line for line in self.lines):
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("CongoDB did not start:\n" + self.output())

    def _read(self):
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def output(self):
        with self._lock:
            return "\n".join(self.lines)

    @property
    def uri(self):
        return f"mongodb://127.0.0.1:{self.port}"

    def stop(self, timeout=10):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class MessageLimitProxy:
    """A TCP proxy on 127.0.0.1 in front of a MongoDB-wire server (CongoDB) that passes every
    message through, except a client message (wire-protocol header: int32 length first) longer
    than `limit` bytes:

    - mode "swallow": read and dropped; the server never sees it and never answers, so
      libmongoc gives up after socketTimeoutMS ('Failed to send ... socket error or timeout'),
      as with a large message to a server that reads it too slowly;
    - mode "close": the connection is closed on it, as a server or proxy with a smaller
      message limit does.

    Either way that one command fails on the wire while the server stays up and answers
    everything else, pings included: the per-command failure that must not read as a storage
    outage."""

    def __init__(self, upstream_port, limit, mode="swallow"):
        assert mode in ("swallow", "close"), mode
        self.upstream_port = upstream_port
        self.limit = limit
        self.mode = mode
        self.refused = []  # lengths of the messages dropped or closed on
        self._lock = threading.Lock()
        self._lsock = socket.socket()
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind(("127.0.0.1", 0))
        self._lsock.listen(64)
        self.port = self._lsock.getsockname()[1]
        self._closed = False
        self._conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def uri(self):
        return f"mongodb://127.0.0.1:{self.port}"

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._lsock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            threading.Thread(target=self._client_to_server, args=(client, server),
                             daemon=True).start()
            threading.Thread(target=self._server_to_client, args=(server, client),
                             daemon=True).start()

    @staticmethod
    def _recv_exact(sock, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def _client_to_server(self, client, server):
        try:
            while True:
                head = self._recv_exact(client, 4)
                if head is None:
                    break
                length = struct.unpack("<i", head)[0]
                if length > self.limit:
                    with self._lock:
                        self.refused.append(length)
                    if self.mode == "close":
                        break  # closes both sides, the rest of the message unread
                    if self._recv_exact(client, length - 4) is None:
                        break
                    continue  # swallowed: no reply will come
                body = self._recv_exact(client, max(length - 4, 0))
                if body is None:
                    break
                server.sendall(head + body)
        except OSError:
            pass
        finally:
            self._close_pair(client, server)

    def _server_to_client(self, server, client):
        try:
            while True:
                data = server.recv(1 << 16)
                if not data:
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            self._close_pair(client, server)

    @staticmethod
    def _close_pair(*socks):
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self._closed = True
        self._lsock.close()
        with self._lock:
            conns, self._conns = self._conns, []
        self._close_pair(*conns)


def unique_db():
    return "t_" + uuid.uuid4().hex[:16]


def storage_config(backend, data_dir=None, uri=None, database=None, **extra):
    """The `storage:` section for a backend (merged into the harness' defaults)."""
    st = dict(extra)
    st["backend"] = backend
    if data_dir:
        st["data_dir"] = data_dir
    if backend == "mongodb":
        st["mongodb"] = {"uri": uri, "database": database or unique_db()}
    return st


def assert_storetest_started(server):
    info = server.http("GET", "/api/v1/server").json()
    state = [p for p in info["plugins"] if p["name"] == "storetest"]
    assert state and state[0]["state"] == "started", f"{state}\n{server.log()}"
    return server


class StoreClient:
    """POST /api/v1/storetest/{coll}/{op} with helpers that assert success."""

    def __init__(self, server):
        self.server = server

    def call(self, coll, op, body, timeout=30):
        return self.server.http("POST", f"/api/v1/storetest/{coll}/{op}", body=body,
                                timeout=timeout)

    def ok(self, coll, op, body, timeout=30):
        r = self.call(coll, op, body, timeout)
        assert r.status == 200, f"{coll}/{op} {body!r:.300}: {r!r}"
        return r.json()

    def error(self, coll, op, body, status, code, timeout=30):
        r = self.call(coll, op, body, timeout)
        assert r.status == status, f"{coll}/{op} {body!r:.300}: want {status}, got {r!r}"
        assert (r.header("Content-Type") or "").startswith("application/problem+json"), r
        p = r.json()
        assert p["status"] == status and p["code"] == code, p
        assert isinstance(p.get("detail"), str) and p["detail"], p
        return p

    def insert(self, coll, docs):
        ids = self.ok(coll, "insert", {"docs": docs})["ids"]
        assert len(ids) == (len(docs) if isinstance(docs, list) else 1)
        assert all(HEX24.match(i) for i in ids), ids
        return ids

    def find(self, coll, **spec):
        res = self.ok(coll, "find", spec)
        assert set(res) == {"docs", "next"}, res
        return res["docs"]

    def find_one(self, coll, **spec):
        res = self.ok(coll, "find_one", spec)
        assert set(res) == {"doc"}, res
        return res["doc"]

    def count(self, coll, flt=None):
        body = {} if flt is None else {"filter": flt}
        res = self.ok(coll, "count", body)
        return res["count"]

    def get(self, coll, _id):
        return self.find_one(coll, filter={"_id": _id})


def strip_ids(docs):
    return [{k: v for k, v in d.items() if k != "_id"} for d in docs]
