"""REST against a real onaird: plugin routes, host-rendered problems, limits, auth."""
import json
import os
import re
import time

from onair_harness import make_token, request


def problem(r, status, code):
    assert r.status == status, r
    assert r.header("Content-Type").startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["type"] == "urn:onair:problem:" + code
    assert body["title"]
    assert body["request_id"] == r.header("X-Request-Id")
    return body


def sdk_abi():
    """The ABI version the SDK header declares: what /api/v1/server must report."""
    path = os.path.join(os.environ["ONAIR_SOURCE_DIR"], "sdk/include/onair/plugin.h")
    with open(path) as f:
        text = f.read()
    version = {}
    for part in ("major", "minor"):
        m = re.search(r"#define ONAIR_ABI_%s\s+(\d+)" % part.upper(), text)
        version[part] = int(m.group(1))
    return version


def test_builtin_endpoints(server):
    r = server.http("GET", "/healthz")
    assert r.status == 200 and r.json() == {"status": "ok"}
    r = server.http("GET", "/readyz")
    assert r.status == 200 and r.json()["status"] == "ready"
    info = server.http("GET", "/api/v1/server").json()
    assert info["abi"] == sdk_abi() and info["abi"]["major"] == 1
    names = {p["name"]: p for p in info["plugins"]}
    assert names["testkit"]["state"] == "started"
    assert names["hello"]["state"] == "started" and names["hello"]["version"] == "1.0.0"


def test_plugin_routes_and_config(server):
    r = server.http("GET", "/api/v1/hello/ada")
    assert r.status == 200 and r.json()["message"] == "Hello, ada!"
    assert r.header("Content-Type") == "application/json"
    r = server.http("GET", "/api/v1/testkit/config")
    assert r.json() == {"label": "testkit", "limit": 10}
    r = server.http("GET", "/api/v1/testkit/raw?q=a%20b+c")
    assert r.status == 200 and r.body == "a b c"
    assert r.header("X-Testkit") == "yes"
    assert r.header("Content-Type").startswith("text/plain")


def test_request_id(server):
    r = server.http("GET", "/healthz", headers={"X-Request-Id": "my-id.1"})
    assert r.header("X-Request-Id") == "my-id.1"
    r = server.http("GET", "/healthz", headers={"X-Request-Id": "bad id with spaces"})
    generated = r.header("X-Request-Id")
    assert generated and generated != "bad id with spaces"


def test_problems_404_405(server):
    problem(server.http("GET", "/api/v1/nothing/here"), 404, "not_found")
    body = problem(server.http("DELETE", "/api/v1/testkit/config"), 405, "method_not_allowed")
    r = server.http("DELETE", "/api/v1/testkit/config")
    assert "GET" in r.header("Allow")
    assert body["instance"] == "/api/v1/testkit/config"


def test_problems_from_handlers(server):
    problem(server.http("GET", "/api/v1/testkit/conflict"), 409, "conflict")
    problem(server.http("GET", "/api/v1/testkit/noreply"), 500, "internal")
    problem(server.http("GET", "/api/v1/hello/" + "x" * 100), 400, "name_too_long")


def test_json_body_validation(server):
    r = server.http("POST", "/api/v1/testkit/json", body={"a": [1, 2, {"b": None}]})
    assert r.status == 200 and r.json() == {"echo": {"a": [1, 2, {"b": None}]}}
    body = problem(server.http("POST", "/api/v1/testkit/json", body='{"a": ',
                               headers={"Content-Type": "application/json"}), 400, "invalid_json")
    assert "detail" in body
    problem(server.http("POST", "/api/v1/testkit/json", body="[1,2]",
                        headers={"Content-Type": "application/json"}), 400, "invalid_json")
    problem(server.http("POST", "/api/v1/testkit/json", body="{}",
                        headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type")
    bomb = '{"a":' * 5000 + "1" + "}" * 5000
    problem(server.http("POST", "/api/v1/testkit/json", body=bomb,
                        headers={"Content-Type": "application/json"}), 400, "json_too_deep")
    # the server is still fine
    assert server.http("GET", "/healthz").status == 200


def test_body_limits(server):
    assert server.http("POST", "/api/v1/testkit/small", body="x" * 16).json() == {"bytes": 16}
    problem(server.http("POST", "/api/v1/testkit/small", body="x" * 17), 413, "payload_too_large")
    # the server default (1 MiB) on a route without its own limit
    assert server.http("POST", "/api/v1/testkit/body", body="y" * 100000).json() == {"bytes": 100000}
    # an announced body over the limit is refused before it is sent (no upload wasted)
    answer = server.raw(b"POST /api/v1/testkit/body HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Length: 1048577\r\n\r\n", timeout=5)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"code":"payload_too_large"' in answer
    assert server.http("GET", "/healthz").status == 200


def test_auth_requirements(server):
    r = server.http("GET", "/api/v1/testkit/user")
    problem(r, 401, "unauthorized")
    assert r.header("WWW-Authenticate").startswith("Bearer")
    assert server.http("GET", "/api/v1/testkit/user", token=make_token()).status == 200
    # role
    problem(server.http("GET", "/api/v1/testkit/admin", token=make_token(roles=["viewer"])), 403,
            "forbidden")
    assert server.http("GET", "/api/v1/testkit/admin",
                       token=make_token(roles=["viewer", "admin"])).status == 200
    # verified
    problem(server.http("GET", "/api/v1/testkit/verified", token=make_token()), 403,
            "verification_required")
    assert server.http("GET", "/api/v1/testkit/verified",
                       token=make_token(verified=True)).status == 200
    # the plugin sees the user
    me = server.http("GET", "/api/v1/hello/me", token=make_token(sub="u42", roles=["streamer"]))
    assert me.json() == {"id": "u42", "roles": ["streamer"], "verified": False}


def test_bad_tokens(server):
    bad = [
        make_token(secret="wrong-secret-wrong-secret-wrong"),  # forged
        make_token(exp_in=-3600),                               # expired
        make_token(alg="none"),                                 # alg none
        make_token(iss="someone-else"),                         # wrong issuer
        make_token(nbf=int(time.time()) + 3600),               # not yet valid
        "not.a.jwt",
        "garbage",
    ]
    for t in bad:
        problem(server.http("GET", "/api/v1/testkit/user", token=t), 401, "invalid_token")
    problem(server.http("GET", "/api/v1/testkit/user", headers={"Authorization": "Basic abc"}),
            401, "invalid_token")


def test_keep_alive_and_metrics(server):
    conn = server.connection()
    for i in range(5):
        r = request(conn, "GET", "/api/v1/hello/k%d" % i)
        assert r.status == 200 and r.json()["message"] == "Hello, k%d!" % i
    conn.close()
    m = server.http("GET", "/metrics")
    assert m.status == 200
    assert m.header("Content-Type").startswith("text/plain")
    assert 'onair_http_requests_total{route="GET /api/v1/hello/{name}",status="200"}' in m.body
    assert "onair_http_request_duration_seconds_bucket" in m.body
    assert "onair_plugins_loaded 2" in m.body


def test_cors(server_factory):
    s = server_factory(plugins={"testkit": {}},
                       core={"server": {"cors_origins": ["https://app.example"]}}).start()
    r = s.http("GET", "/api/v1/testkit/config", headers={"Origin": "https://app.example"})
    assert r.header("Access-Control-Allow-Origin") == "https://app.example"
    assert "Location" in r.header("Access-Control-Expose-Headers")
    r = s.http("GET", "/api/v1/testkit/config", headers={"Origin": "https://evil.example"})
    assert r.header("Access-Control-Allow-Origin") is None
    r = s.http("OPTIONS", "/api/v1/testkit/json",
               headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert r.status == 204
    assert "POST" in r.header("Access-Control-Allow-Methods")


def test_malformed_http_keeps_serving(server):
    for junk in [b"GARBAGE\r\n\r\n", b"GET\r\n\r\n", b"\x00\x01\x02\x03" * 100,
                 b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                 b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n"]:
        server.raw(junk, timeout=2)
    big_header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n"
    answer = server.raw(big_header, timeout=2)
    assert not answer.startswith(b"HTTP/1.1 200")
    assert server.http("GET", "/healthz").status == 200


def test_tls(server_factory, tmp_path):
    """server.tls.cert/key: the same port speaks HTTPS and WSS."""
    import asyncio
    import http.client
    import ssl
    import subprocess

    import websockets

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    s = server_factory(plugins={"testkit": {}},
                       core={"server": {"tls": {"cert": str(cert), "key": str(key)}}}).start()
    assert s.wait_log(r"listening on https://", 5)
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    conn = http.client.HTTPSConnection("127.0.0.1", s.port, context=ctx, timeout=10)
    r = request(conn, "GET", "/api/v1/testkit/config")
    assert r.status == 200 and r.json()["label"] == "testkit"
    conn.close()

    async def wss():
        async with websockets.connect(f"wss://127.0.0.1:{s.port}/ws", ssl=ctx) as ws:
            await ws.send(json.dumps({"type": "testkit.whoami", "id": 1}))
            return json.loads(await ws.recv())

    assert asyncio.run(wss())["data"] == {"user": None}
    # plain HTTP on the TLS port gets no HTTP answer (the connection is refused or reset)
    try:
        answer = s.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", timeout=2)
    except ConnectionError:
        answer = b""
    assert not answer.startswith(b"HTTP/1.1 200")
    conn = http.client.HTTPSConnection("127.0.0.1", s.port, context=ctx, timeout=10)
    assert request(conn, "GET", "/healthz").status == 200
    conn.close()


# ---- ABI 1.5: declared body schemas and reply targets (testkit's POST /items) ----

BODY_CASES = [
    # body, code, field
    ({}, "missing_field", "title"),
    ({"title": ""}, "invalid_field", "title"),
    ({"title": "x" * 11}, "invalid_field", "title"),
    ({"title": 5}, "invalid_field", "title"),
    ({"title": None}, "invalid_field", "title"),
    ({"title": "ok", "colour": "red"}, "unknown_field", "colour"),
    ({"title": "ok", "count": "3"}, "invalid_field", "count"),
    ({"title": "ok", "count": 2.5}, "invalid_field", "count"),
    ({"title": "ok", "count": 6}, "invalid_field", "count"),
    ({"title": "ok", "count": True}, "invalid_field", "count"),
    ({"title": "ok", "kind": "c"}, "invalid_field", "kind"),
    ({"title": "ok", "tags": ["a", 1]}, "invalid_field", "tags"),
    ({"title": "ok", "tags": ["a", "b", "c"]}, "invalid_field", "tags"),
    ({"title": "ok", "owner": "not-an-id"}, "invalid_field", "owner"),
    ({"title": "ok", "opts": {"on": "yes"}}, "invalid_field", "opts.on"),
    ({"title": "ok", "opts": {"other": 1}}, "unknown_field", "opts.other"),
    ({"title": "ok", "opts": 3}, "invalid_field", "opts"),
    ({"title": "ok", "meta": [1]}, "invalid_field", "meta"),
]


def test_declared_body_schema_rest(server):
    good = {"title": "ünïcödé 10", "count": 0, "kind": "a", "tags": ["x"],
            "owner": "0123456789abcdef01234567", "opts": {"slow_s": None, "on": True},
            "meta": {"anything": [1, {"goes": None}]}}
    r = server.http("POST", "/api/v1/testkit/items", body=good)
    assert r.status == 201, r
    assert r.json() == {"item": good}
    for body, code, field in BODY_CASES:
        b = problem(server.http("POST", "/api/v1/testkit/items", body=body), 400, code)
        assert b["field"] == field, (body, b)
        assert field in b["detail"] or code == "unknown_field", b
    problem(server.http("POST", "/api/v1/testkit/items", body="[1]",
                        headers={"Content-Type": "application/json"}), 400, "invalid_json")
    # a handler's problem with members: retry_after_s also becomes Retry-After
    r = server.http("POST", "/api/v1/testkit/items", body={"title": "t", "count": 5})
    b = problem(r, 429, "too_many")
    assert b["retry_after_s"] == 7 and b["field"] == "count"
    assert r.header("Retry-After") == "7"


def test_optional_declared_body(server):
    r = server.http("POST", "/api/v1/testkit/options")  # no body, no Content-Type: {}
    assert r.status == 200 and r.json() == {"options": {}}, r
    r = server.http("POST", "/api/v1/testkit/options", body={"on": True})
    assert r.status == 200 and r.json() == {"options": {"on": True}}, r
    b = problem(server.http("POST", "/api/v1/testkit/options", body={"off": 1}), 400,
                "unknown_field")
    assert b["field"] == "off"
    problem(server.http("POST", "/api/v1/testkit/options", body="{nope",
                        headers={"Content-Type": "application/json"}), 400, "invalid_json")
    problem(server.http("POST", "/api/v1/testkit/options", body="{}",
                        headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type")


def test_declared_body_schema_websocket(server):
    import asyncio
    import websockets

    async def scenario():
        async with websockets.connect(server.ws_url) as ws:
            async def call(data, id_):
                await ws.send(json.dumps({"type": "testkit.item", "id": id_, "data": data}))
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if msg.get("id") == id_:
                        return msg
            msg = await call({"title": "hi"}, 1)
            assert msg["type"] == "result" and msg["data"] == {"item": {"title": "hi"}}, msg
            for i, (body, code, field) in enumerate(BODY_CASES):
                msg = await call(body, 100 + i)
                assert msg["type"] == "error", msg
                assert msg["data"]["code"] == code and msg["data"]["field"] == field, (body, msg)
                assert msg["data"]["status"] == 400
            msg = await call({"title": "t", "count": 5}, 999)
            assert msg["data"]["code"] == "too_many" and msg["data"]["status"] == 429
            assert msg["data"]["retry_after_s"] == 7

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_any_thread_route(server):
    """ONAIR_ROUTE_ANY_THREAD (ABI 1.8): a public request without body or credentials is
    answered on the network thread that read it; one with an Authorization header goes to the
    core loop (its token is checked there: a bad one is refused as on every route)."""
    r = server.http("GET", "/api/v1/testkit/thread")
    assert r.status == 200, r
    assert r.json()["thread"].startswith("onair-net"), r.json()
    r = server.http("GET", "/api/v1/testkit/thread", token=make_token())
    assert r.status == 200, r
    assert not r.json()["thread"].startswith("onair-net"), r.json()
    problem(server.http("GET", "/api/v1/testkit/thread", token="garbage"), 401, "invalid_token")
    # the host answers for a handler that returns a status, or wants to answer later
    problem(server.http("GET", "/api/v1/testkit/thread?fail=perm"), 403, "forbidden")
    problem(server.http("GET", "/api/v1/testkit/thread?fail=pending"), 500, "internal")
    # the log line may reach the harness after the answer: wait for it
    assert server.wait_log(r"ONAIR_ROUTE_ANY_THREAD"), server.log()
    # many on one keep-alive connection, and the hello example's route of that kind
    conn = server.connection()
    for i in range(200):
        r = request(conn, "GET", "/api/v1/hello/k%d" % i)
        assert r.status == 200 and r.json() == {"message": "Hello, k%d!" % i}, r
    conn.close()
    r = server.http("HEAD", "/api/v1/testkit/thread")
    assert r.status == 200 and r.body in (b"", ""), r
