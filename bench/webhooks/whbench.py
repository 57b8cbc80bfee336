#!/usr/bin/python3
"""Webhook delivery throughput: one onaird (sqlite, streams + webhooks), E endpoints on one
stream, all pointing at a local keep-alive HTTP receiver (a thread pool in this process), and
N events (stream.updated, from PATCH /api/v1/streams/{id} on one keep-alive connection). Every
endpoint gets every event, in order, one request at a time per endpoint.

Prints one RESULT line per run: deliveries/s from the first event to the last delivery, the
delivery latency (event sent -> received) p50/p99, and onaird's CPU seconds for the run.
Usage: bench/webhooks/whbench.py [endpoints=10] [events=500] [runs=3]
Environment: BUILD (default build)."""
import http.client
import http.server
import json
import os
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
os.environ.setdefault("ONAIRD", os.path.join(BUILD, "core", "onaird"))
os.environ.setdefault("ONAIR_PLUGIN_DIR", os.path.join(BUILD, "plugins"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from onair_harness import PLUGIN_DIR, Server, free_port  # noqa: E402

E = int(sys.argv[1]) if len(sys.argv) > 1 else 10
N = int(sys.argv[2]) if len(sys.argv) > 2 else 500
RUNS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
KEY, SECRET = "benchkey", "bench-secret-0123456789-abcdefghijklmnop"


class Receiver:
    def __init__(self):
        self.lock = threading.Lock()
        self.arrivals = []  # (title, time)
        self.order = {}     # path -> titles in arrival order
        rec = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: curl reuses its connections

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.monotonic()
                title = json.loads(body)["data"]["stream"]["title"]
                with rec.lock:
                    rec.arrivals.append((title, now))
                    rec.order.setdefault(self.path, []).append(title)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.port = free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def one_run(run):
    rec = Receiver()
    plugins = {"streams": {"path": os.path.join(PLUGIN_DIR, "streams.so")},
               "webhooks": {"path": os.path.join(PLUGIN_DIR, "webhooks.so"),
                            "config": {"allow_private": True, "max_endpoints_per_stream": 1000}}}
    core = {"auth": {"api_keys": [f"{KEY}:{SECRET}"]}, "logging": {"level": "info", "access_log": False},
            "rate_limits": {"auth.register": "100000/1m"}}
    srv = Server(plugins=plugins, core=core)
    srv.start()
    try:
        # the stream belongs to a registered account (an API-key token's subject is none)
        u = "whowner" + os.urandom(4).hex()
        r = srv.http("POST", "/api/v1/auth/register", {"username": u, "email": u + "@example.org",
                                                       "password": "correct horse battery staple"})
        assert r.status == 201, r
        tok = r.json()["access_token"]
        r = srv.http("POST", "/api/v1/streams", {"title": "bench"}, token=tok)
        sid = r.json()["stream"]["id"]
        for i in range(E):
            r = srv.http("POST", "/api/v1/webhooks/endpoints",
                         {"stream": sid, "url": f"http://127.0.0.1:{rec.port}/e{i}",
                          "events": ["stream.updated"]}, token=tok)
            assert r.status == 201, r
        conn = srv.connection(timeout=30)
        sent = {}
        cpu0 = cpu_s(srv.proc.pid)
        t0 = time.monotonic()
        for i in range(N):
            title = f"t{i}"
            sent[title] = time.monotonic()
            conn.request("PATCH", f"/api/v1/streams/{sid}", json.dumps({"title": title}),
                         {"Authorization": "Bearer " + tok, "Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
        t_events = time.monotonic() - t0
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            with rec.lock:
                if len(rec.arrivals) >= E * N:
                    break
            time.sleep(0.01)
        with rec.lock:
            arrivals = list(rec.arrivals)
        cpu1 = cpu_s(srv.proc.pid)
        assert len(arrivals) == E * N, f"{len(arrivals)} of {E * N} delivered"
        with rec.lock:  # every endpoint got every event once, in order
            assert all(v == [f"t{i}" for i in range(N)] for v in rec.order.values()), "order"
        t_total = max([t for _, t in arrivals] + [t0 + t_events]) - t0
        lat = sorted((t - sent[title]) * 1000 for title, t in arrivals) or [0.0]
        p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(f"RESULT run={run} endpoints={E} events={N} deliveries={len(arrivals)} "
              f"events_per_s={N / t_events:.0f} deliveries_per_s={len(arrivals) / t_total:.0f} "
              f"latency_p50_ms={p50:.1f} latency_p99_ms={p99:.1f} "
              f"onaird_cpu_s={cpu1 - cpu0:.2f}", flush=True)
        return len(arrivals) / t_total, p50, p99, cpu1 - cpu0
    finally:
        srv.stop()
        srv.kill()
        rec.stop()


def main():
    print(f"machine: {os.cpu_count()} cores, "
          f"{open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip()}")
    res = [one_run(r + 1) for r in range(RUNS)]
    med = [statistics.median(x) for x in zip(*res)]
    print(f"median: endpoints={E} events={N} deliveries_per_s={med[0]:.0f} "
          f"latency_p50_ms={med[1]:.1f} latency_p99_ms={med[2]:.1f} onaird_cpu_s={med[3]:.2f}")


if __name__ == "__main__":
    main()
