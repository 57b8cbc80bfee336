#!/usr/bin/python3
"""CPU of RTMP ingest and of restreaming (issue 18), on one onaird (the integration harness's):
ffmpeg publishes 640x360 30 fps H.264 (1 Mbit/s) + AAC over RTMP (the rtmp plugin:
repacketizing, AAC -> Opus); then the stream is restreamed to 1, then 2 nginx-rtmp destinations
(the multiplatform plugin: depacketizing, FLV, Opus -> AAC per destination). onaird's CPU
(utime + stime from /proc) is measured over `seconds` in each phase; the cost of one ingest is
phase 0, of one destination (phase k - phase 0) / k. Prints every run and the medians. With
`rtmps` ffmpeg publishes over RTMPS (TLS, a self-signed certificate made here with openssl) to
the plugin's TLS port instead.

Usage: bench/restream/run.py [seconds=15] [runs=3] [rtmp|rtmps]
Environment: ONAIRD, ONAIR_PLUGIN_DIR (as the integration tests; default build-rtmp).
"""
import os
import statistics
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
os.environ.setdefault("ONAIRD", os.path.join(ROOT, "build-rtmp", "core", "onaird"))
os.environ.setdefault("ONAIR_PLUGIN_DIR", os.path.join(ROOT, "build-rtmp", "plugins"))

from onair_harness import PLUGIN_DIR, Server, free_port  # noqa: E402
from test_multiplatform import SERVER_KEY, Nginx, connection, dest_states  # noqa: E402
from test_rtmp import new_stream, wait_for  # noqa: E402
from test_streams import Account, core, streams_plugin  # noqa: E402

SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 15
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
TLS = len(sys.argv) > 3 and sys.argv[3] == "rtmps"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TICK


def measure(pid):
    c0, t0 = cpu_s(pid), time.monotonic()
    time.sleep(SECONDS)
    return 100.0 * (cpu_s(pid) - c0) / (time.monotonic() - t0)


def rtmp_config(port, tls_port, certdir):
    """The rtmp plugin's configuration; with TLS a self-signed certificate in certdir."""
    cfg = {"port": port, "bind_address": "127.0.0.1"}
    if TLS:
        cert, key = os.path.join(certdir, "cert.pem"), os.path.join(certdir, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                        "/CN=127.0.0.1", "-keyout", key, "-out", cert], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cfg["tls"] = {"port": tls_port, "cert": cert, "key": key}
    return cfg


def one_run():
    port, tls_port = free_port(), free_port()
    certdir = tempfile.mkdtemp(prefix="bench-rtmps-")
    url = f"rtmps://127.0.0.1:{tls_port}" if TLS else f"rtmp://127.0.0.1:{port}"
    srv = Server(plugins={"streams": streams_plugin(),
                          "rtmp": {"path": os.path.join(PLUGIN_DIR, "rtmp.so"),
                                   "config": rtmp_config(port, tls_port, certdir)},
                          "multiplatform": {"path": os.path.join(PLUGIN_DIR, "multiplatform.so"),
                                            "config": {}}},
                 core=core({"backend": "sqlite"}),
                 env={"ONAIR_MULTIPLATFORM_KEY": SERVER_KEY}).start()
    nginx = [Nginx("app1"), Nginx("app2")]
    ff = None
    try:
        for n in nginx:
            n.start()
        owner = Account(srv, "bench")
        sid, key = new_stream(owner)
        conns = [connection(owner, f"D{i}", n.url(), f"k{i}")["id"] for i, n in enumerate(nginx)]
        ff = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
             "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i",
             "sine=frequency=440:sample_rate=48000", "-c:v", "libx264", "-profile:v", "main",
             "-preset", "veryfast", "-b:v", "1000k", "-g", "60", "-pix_fmt", "yuv420p", "-c:a",
             "aac", "-b:a", "128k", "-f", "flv", f"{url}/live/{key}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(5)
        res = {"ingest": measure(srv.proc.pid)}
        for k in (1, 2):
            r = owner.call("PUT", f"/api/v1/streams/{sid}/multiplatform",
                           {"destinations": conns[:k], "start_with_stream": True})
            assert r.status == 200, r
            assert wait_for(lambda: sum(d["state"] == "live"
                                        for d in dest_states(owner, sid).values()) == k, 60), \
                (dest_states(owner, sid), [ln for ln in srv.log().splitlines()
                                           if "access" not in ln][-8:])
            time.sleep(3)
            res[f"dest{k}"] = measure(srv.proc.pid)
        res["per_destination"] = (res["dest2"] - res["ingest"]) / 2
        return res
    finally:
        if ff:
            ff.terminate()
            ff.wait(10)
        for n in nginx:
            n.kill()
        srv.stop()
        srv.kill()
        shutil.rmtree(certdir, ignore_errors=True)


def main():
    runs = []
    for i in range(RUNS):
        r = one_run()
        runs.append(r)
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.1f} %" for k, v in r.items()), flush=True)
    print("median: " + ", ".join(f"{k} {statistics.median(r[k] for r in runs):.1f} %"
                                 for k in runs[0]))


if __name__ == "__main__":
    main()
