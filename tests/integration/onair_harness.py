"""Start a real onaird for integration tests and talk to it with real clients.

Used through the fixtures in conftest.py. Environment (set by ctest):
  ONAIRD                 the onaird binary
  ONAIR_PLUGIN_DIR       stock plugins (hello.so, ...)
  ONAIR_TEST_PLUGIN_DIR  test-only plugins (testkit.so, broken ones)
"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time

ONAIRD = os.environ.get("ONAIRD", "build/core/onaird")
PLUGIN_DIR = os.environ.get("ONAIR_PLUGIN_DIR", "build/plugins")
TEST_PLUGIN_DIR = os.environ.get("ONAIR_TEST_PLUGIN_DIR", "build/tests/plugins")
JWT_SECRET = "integration-test-secret-0123456789"
# ASan/LSan/UBSan (make sanitize) and ThreadSanitizer (make tsan) reports
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(sub="user1", roles=("viewer",), verified=False, exp_in=900, secret=JWT_SECRET,
               alg="HS256", iss="onair", nbf=None, extra=None):
    """An access token as the server expects it (HS256 JWT)."""
    now = int(time.time())
    header = {"alg": alg, "typ": "JWT"}
    claims = {"iss": iss, "sub": sub, "iat": now, "exp": now + exp_in, "roles": list(roles),
              "verified": verified, "jti": b64url(os.urandom(8))}
    if nbf is not None:
        claims["nbf"] = nbf
    if extra:
        claims.update(extra)
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    if alg == "none":
        return signing_input + "."
    sig = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(yaml_scalar(x) for x in v) + "]"
    return json.dumps(str(v))  # a JSON string is a valid YAML scalar


def to_yaml(d, indent=0):
    """Tiny YAML writer for nested dicts of scalars/lists (enough for configs)."""
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out.append(" " * indent + f"{k}:")
            out.append(to_yaml(v, indent + 2) if v else " " * (indent + 2) + "{}")
        else:
            out.append(" " * indent + f"{k}: {yaml_scalar(v)}")
    return "\n".join(out)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.body[:200]!r}>"


class Server:
    """One onaird process with its own temporary conf.d."""

    def __init__(self, plugins=None, core=None, env=None, extra_files=None):
        self.dir = tempfile.mkdtemp(prefix="onair-it-")
        self.plugins = plugins if plugins is not None else {"testkit": {}}
        self.core = core or {}
        self.env = env or {}
        self.extra_files = extra_files or {}
        self.proc = None
        self.port = None
        self.log_lines = []
        self._log_lock = threading.Lock()
        self._reader = None
        self.write_config()

    # ---- configuration -------------------------------------------------------------
    def write_config(self):
        core = {
            "server": {"host": "127.0.0.1", "port": 0, "shutdown_timeout": 10},
            "auth": {"jwt_secret": JWT_SECRET},
            "storage": {"data_dir": os.path.join(self.dir, "data")},
            "logging": {"level": "info"},
            "plugins": {"dir": PLUGIN_DIR, "conf_dir": "plugins"},
            # a free media port per daemon (tests run in parallel); one worker is enough
            "media": {"udp_port": 0, "workers": 1, "public_addresses": ["127.0.0.1"]},
            # tests register and log in many accounts from one address
            "rate_limits": {"auth.register": "100000/1m", "auth.login": "100000/1m"},
        }
        # ONAIR_TEST_NETWORK_THREADS=1 (or 2, ...): the suite with that many network threads
        # (default: server.network_threads' own, one per CPU); a test's own value wins
        if os.environ.get("ONAIR_TEST_NETWORK_THREADS"):
            core["server"]["network_threads"] = int(os.environ["ONAIR_TEST_NETWORK_THREADS"])
        for section, values in self.core.items():
            if isinstance(values, dict):
                core.setdefault(section, {}).update(values)
            else:
                core[section] = values
        self.config_path = os.path.join(self.dir, "onair.yaml")
        with open(self.config_path, "w") as f:
            f.write(to_yaml(core) + "\n")
        pdir = os.path.join(self.dir, "plugins")
        os.makedirs(pdir, exist_ok=True)
        for name, spec in self.plugins.items():
            spec = dict(spec)
            spec.setdefault("enabled", True)
            if "path" not in spec and name != "hello":
                spec["path"] = os.path.join(TEST_PLUGIN_DIR, name + ".so")
            with open(os.path.join(pdir, name + ".yaml"), "w") as f:
                f.write(to_yaml(spec) + "\n")
        for rel, text in self.extra_files.items():
            with open(os.path.join(self.dir, rel), "w") as f:
                f.write(text)

    # ---- process -------------------------------------------------------------------
    def start(self, args=(), wait=True, timeout=30):
        env = dict(os.environ)
        env.update(self.env)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        with self._log_lock:  # a restart starts a fresh log (the old one was checked at stop)
            self.log_lines = []
        self.proc = subprocess.Popen([ONAIRD, "-c", self.config_path, *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env, text=True, errors="replace")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait:
            m = self.wait_log(r"listening on https?://[^:]+:(\d+)", timeout)
            if not m:
                self.kill()
                raise RuntimeError("onaird did not start:\n" + self.log())
            self.port = int(m.group(1))
        return self

    def _read(self):
        for line in self.proc.stdout:
            with self._log_lock:
                self.log_lines.append(line.rstrip("\n"))

    def log(self):
        with self._log_lock:
            return "\n".join(self.log_lines)

    def wait_log(self, pattern, timeout=10):
        deadline = time.time() + timeout
        rx = re.compile(pattern)
        while time.time() < deadline:
            with self._log_lock:
                for line in self.log_lines:
                    m = rx.search(line)
                    if m:
                        return m
            if self.proc.poll() is not None:
                self._reader.join(2)
                with self._log_lock:
                    for line in self.log_lines:
                        m = rx.search(line)
                        if m:
                            return m
                return None
            time.sleep(0.02)
        return None

    def stop(self, timeout=30):
        """SIGTERM and wait; returns the exit code. Sanitizer reports fail the test."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("onaird did not stop within %ss:\n%s" % (timeout, self.log()))
        self._reader.join(5)
        self.check_sanitizers()
        return rc

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def check_sanitizers(self):
        text = self.log()
        for marker in SANITIZER_MARKERS:
            if marker in text:
                raise AssertionError("sanitizer report in onaird output:\n" + text[-6000:])

    # ---- clients -------------------------------------------------------------------
    def http(self, method, path, body=None, headers=None, token=None, timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            return request(conn, method, path, body, headers, token)
        finally:
            conn.close()

    def connection(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def raw(self, data, timeout=5, read=True):
        """Send raw bytes, return what the server answers until it closes or times out."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        try:
            s.sendall(data)
            if not read:
                return b""
            chunks = []
            try:
                while True:
                    c = s.recv(65536)
                    if not c:
                        break
                    chunks.append(c)
                    if b"\r\n\r\n" in b"".join(chunks) and len(b"".join(chunks)) > 0 and read == "head":
                        break
            except socket.timeout:
                pass
            return b"".join(chunks)
        finally:
            s.close()

    @property
    def ws_url(self):
        return f"ws://127.0.0.1:{self.port}/ws"


def request(conn, method, path, body=None, headers=None, token=None):
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = "Bearer " + token
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
        headers.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    return Response(r.status, r.getheaders(), data.decode("utf-8", "replace"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
