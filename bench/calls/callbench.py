#!/usr/bin/python3
"""LiveKit signalling load on the calls plugin: C 1:1 calls at once, each two WebSocket clients
of our own speaking livekit-client's protocol (the /rtc/v1 URL with a gzipped join request of a
real-size offer, binary protobuf). Per call: both join the room `call-<i>`, each publishes a
track (add_track -> track_published) and sees the other's participant_update, then both leave.
Signalling only: media is not connected by the plugin yet.

Prints one RESULT line per run: calls set up per second (first connect to the last
participant_update), join set-up time (connect -> JoinResponse) p50/p99, and onaird's CPU
seconds per 1,000 calls.
Usage: bench/calls/callbench.py [calls=200] [concurrency=50] [runs=3]
Environment: BUILD (default build)."""
import asyncio
import base64
import gzip
import hashlib
import hmac
import json
import os
import statistics
import sys
import time
import urllib.parse

import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
os.environ.setdefault("ONAIRD", os.path.join(BUILD, "core", "onaird"))
os.environ.setdefault("ONAIR_PLUGIN_DIR", os.path.join(BUILD, "plugins"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from onair_harness import PLUGIN_DIR, Server  # noqa: E402

CALLS = int(sys.argv[1]) if len(sys.argv) > 1 else 200
CONC = int(sys.argv[2]) if len(sys.argv) > 2 else 50
RUNS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
KEY, SECRET = "APIbench", "bench-secret-0123456789-abcdefghijklmnop"


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(identity, room):
    now = int(time.time())
    h = b64u(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    c = b64u(json.dumps({"iss": KEY, "sub": identity, "nbf": now - 5, "exp": now + 3600,
                         "video": {"room": room, "roomJoin": True}}).encode())
    s = b64u(hmac.new(SECRET.encode(), f"{h}.{c}".encode(), hashlib.sha256).digest())
    return f"{h}.{c}.{s}"


def varint(v):
    out = b""
    while True:
        c = v & 0x7F
        v >>= 7
        out += bytes([c | (0x80 if v else 0)])
        if not v:
            return out


def ld(field, data):
    return varint(field << 3 | 2) + varint(len(data)) + data


def join_request():
    # an offer the size of Chrome's for camera + microphone (~5 KB of SDP)
    sdp = ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" +
           "".join(f"a=rtpmap:{96 + i} VP8/90000\r\na=rtcp-fb:{96 + i} nack pli\r\n"
                   for i in range(60))).encode()
    join = ld(6, ld(1, b"offer") + ld(2, sdp))
    wrapped = varint(1 << 3) + varint(1) + ld(2, gzip.compress(join))
    return base64.b64encode(wrapped).decode().replace("+", "-").replace("/", "_")


JOIN = join_request()


def field_numbers(buf):
    """the top-level field numbers of a message (enough to tell SignalResponse members)"""
    out, i = [], 0
    while i < len(buf):
        tag, shift = 0, 0
        while True:
            b = buf[i]
            i += 1
            tag |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        n, shift = 0, 0
        while True:
            b = buf[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        out.append(tag >> 3)
        i += n
    return out


async def participant(base, identity, room, setup, ready, peer_ready):
    q = urllib.parse.urlencode({"access_token": token(identity, room), "join_request": JOIN})
    t0 = time.monotonic()
    async with websockets.connect(f"{base}/rtc/v1?{q}", max_size=None) as ws:
        first = await ws.recv()
        setup.append(time.monotonic() - t0)
        assert field_numbers(first) == [1], "join first"
        ready.set()
        await peer_ready.wait()
        await ws.send(ld(4, ld(1, b"cam") + varint(3 << 3) + varint(1)))
        got = set()
        while not {6}.issubset(got) or 5 not in got:  # track_published and the peer's update
            got.update(field_numbers(await ws.recv()))
        await ws.send(ld(8, b""))


async def one_call(base, i, setup, sem):
    async with sem:
        room = f"call-{i}"
        ra, rb = asyncio.Event(), asyncio.Event()
        await asyncio.gather(participant(base, f"a{i}", room, setup, ra, rb),
                             participant(base, f"b{i}", room, setup, rb, ra))


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def main():
    srv = Server(plugins={"calls": {"path": os.path.join(PLUGIN_DIR, "calls.so"),
                                    "config": {"api_key": KEY, "api_secret": SECRET}}},
                 core={"server": {"max_header_bytes": 32768,
                                  "max_connections_per_address": 100000}})
    srv.start()
    try:
        base = f"ws://127.0.0.1:{srv.port}"
        for run in range(RUNS):
            setup = []
            c0 = cpu_s(srv.proc.pid)
            t0 = time.monotonic()

            async def go():
                sem = asyncio.Semaphore(CONC)
                await asyncio.gather(*(one_call(base, run * CALLS + i, setup, sem)
                                       for i in range(CALLS)))
            asyncio.run(go())
            wall = time.monotonic() - t0
            cpu = cpu_s(srv.proc.pid) - c0
            setup.sort()
            p99 = setup[min(len(setup) - 1, int(len(setup) * 0.99))]
            print(f"RESULT calls={CALLS} concurrency={CONC} calls_per_s={CALLS / wall:.0f} "
                  f"join_p50_ms={statistics.median(setup) * 1000:.1f} join_p99_ms={p99 * 1000:.1f} "
                  f"onaird_cpu_s_per_1000_calls={cpu / CALLS * 1000:.2f}", flush=True)
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
