"""calls plugin against a real onaird: GET /rtc/v1/validate (and the legacy /rtc/validate) with
LiveKit access tokens minted by LiveKit's own livekit-server-sdk (tests/livekit), as
livekit-client calls it after a failed WebSocket upgrade: 200 "success", 401 with LiveKit's
reason for expired, wrong-secret, unknown-key and no-roomJoin tokens, 400 for a join_request
that does not decode, and a real-size join_request (gzip, base64url, several KB) accepted.
No storage is involved (the plugin keeps nothing), so one backend is enough."""
import base64
import gzip
import json
import os
import subprocess
import urllib.parse

import pytest

from onair_harness import PLUGIN_DIR, Server

LIVEKIT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "livekit")
KEY, SECRET = "APIonairCalls", "calls-test-secret-0123456789abcdefghij"


def mint(*specs):
    """livekit-server-sdk AccessToken.toJwt() for each {identity, grant, ttl?, apiSecret?}."""
    if not os.path.isdir(os.path.join(LIVEKIT_DIR, "node_modules", "livekit-server-sdk")):
        if os.environ.get("ONAIR_CI") or os.environ.get("ONAIR_REQUIRE_LIVEKIT"):
            raise AssertionError("tests/livekit is not installed: make deps-test")
        pytest.skip("livekit-server-sdk is not installed: cd tests/livekit && npm ci")
    items = [{"apiKey": KEY, "apiSecret": SECRET, **s} for s in specs]
    r = subprocess.run(["node", "mint_token.mjs"], input=json.dumps(items), text=True,
                       capture_output=True, cwd=LIVEKIT_DIR, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def srv():
    s = Server(plugins={"calls": {"path": os.path.join(PLUGIN_DIR, "calls.so"),
                                  "config": {"api_key": KEY, "api_secret": SECRET}}},
               core={"server": {"max_header_bytes": 32768}})
    s.start()
    yield s
    s.stop()
    s.check_sanitizers()


def validate(srv, token, path="/rtc/v1/validate", join_request=None):
    q = {"access_token": token}
    if join_request is not None:
        q["join_request"] = join_request
    return srv.http("GET", path + "?" + urllib.parse.urlencode(q))


def pb_varint(v):
    out = b""
    while True:
        c = v & 0x7F
        v >>= 7
        out += bytes([c | (0x80 if v else 0)])
        if not v:
            return out


def pb_bytes(field, data):
    return pb_varint(field << 3 | 2) + pb_varint(len(data)) + data


def join_request_param(sdp_lines):
    """What livekit-client 2.x puts in join_request: base64 (+ and / replaced) of a
    WrappedJoinRequest {compression: GZIP, join_request: gzip(JoinRequest)}."""
    sdp = ("v=0\r\n" + "".join(f"a=x-line-{i}:{os.urandom(24).hex()}\r\n"
                               for i in range(sdp_lines))).encode()
    offer = pb_bytes(1, b"offer") + pb_bytes(2, sdp)
    join = pb_bytes(1, pb_varint(1 << 3) + pb_varint(1)) + pb_bytes(6, offer)
    wrapped = pb_varint(1 << 3) + pb_varint(1) + pb_bytes(2, gzip.compress(join))
    return base64.b64encode(wrapped).decode().replace("+", "-").replace("/", "_")


def test_valid_token(srv):
    tok, = mint({"identity": "alice", "name": "Alice",
                 "grant": {"room": "match-1", "roomJoin": True, "canPublish": True}})
    for path in ("/rtc/v1/validate", "/rtc/validate"):
        r = validate(srv, tok, path)
        assert r.status == 200, r
        assert r.body == "success"
    # a real-size join request: ~8 KB of random SDP lines in the URL (gzip cannot shrink them)
    jr = join_request_param(200)
    assert len(jr) > 8000
    r = validate(srv, tok, join_request=jr)
    assert r.status == 200, r
    r = validate(srv, tok, join_request="AAAA")
    assert r.status == 400
    assert r.body == "invalid join request"


def test_refused_tokens(srv):
    no_join, wrong, expired = mint(
        {"identity": "bob", "grant": {"room": "match-1"}},
        {"identity": "bob", "apiSecret": "another-secret-0123456789abcdefghijkl",
         "grant": {"room": "match-1", "roomJoin": True}},
        {"identity": "bob", "ttl": -3600, "grant": {"room": "match-1", "roomJoin": True}})
    cases = [(no_join, "permissions denied"), (wrong, "invalid token signature"),
             (expired, "token is expired"), ("not-a-token", "malformed access token")]
    for tok, why in cases:
        r = validate(srv, tok)
        assert r.status == 401, (why, r)
        assert r.body == why
    r = srv.http("GET", "/rtc/v1/validate")
    assert r.status == 401
    assert r.body == "no access token"
    # another key: not configured here
    other = mint({"identity": "c", "apiKey": "APIother", "grant": {"room": "r", "roomJoin": True}})
    r = validate(srv, other[0])
    assert r.status == 401
    assert r.body == "unknown API key"
