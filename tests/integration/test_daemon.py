"""The daemon as an admin sees it: CLI flags, config errors, plugin failures, shutdown."""
import json
import os
import re
import subprocess
import threading
import time

from onair_harness import ONAIRD, Server, TEST_PLUGIN_DIR, request


# The host's ABI minor, as the SDK header says (the tests follow it instead of a copy).
with open(os.path.join(os.environ.get("ONAIR_SOURCE_DIR", "."), "sdk/include/onair/plugin.h")) as _h:
    ABI_MINOR = int(re.search(r"#define ONAIR_ABI_MINOR\s+(\d+)", _h.read()).group(1))


def onaird(*args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([ONAIRD, *args], capture_output=True, text=True, env=e, timeout=60)


def test_version_and_help():
    r = onaird("--version")
    assert r.returncode == 0 and re.match(
        r"onaird \d+\.\d+\.\d+ \(plugin ABI 1\.%d\)" % ABI_MINOR, r.stdout), r.stdout
    assert onaird("--help").returncode == 0
    assert onaird("--bogus").returncode == 2


def test_check_config_good():
    s = Server(plugins={"testkit": {"config": {"limit": 5}}, "hello": {}})
    r = onaird("-c", s.config_path, "--check-config")
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stdout


def test_check_config_reports_file_line_column():
    s = Server(plugins={"testkit": {"config": {"limit": 500, "lable": "x"}}})
    with open(s.config_path, "a") as f:
        f.write("server:\n  prot: 80\n")  # duplicate section is itself an error; use a new file
    # write a clean core file with a typo on a known line
    with open(s.config_path, "w") as f:
        f.write("server:\n  host: 127.0.0.1\n  prot: 8080\nlogging:\n  level: loud\n"
                "plugins:\n  dir: /nonexistent\n  conf_dir: plugins\n")
    r = onaird("-c", s.config_path, "--check-config")
    assert r.returncode == 1
    err = r.stderr
    assert f"{s.config_path}:3:3: " in err and "did you mean 'port'" in err, err
    assert f"{s.config_path}:5:10: " in err and "loud" in err, err


def test_check_config_plugin_schema_errors():
    s = Server(plugins={"testkit": {"config": {"limit": 500, "lable": "x"}}})
    r = onaird("-c", s.config_path, "--check-config")
    assert r.returncode == 1
    yaml_path = os.path.join(s.dir, "plugins", "testkit.yaml")
    lines = open(yaml_path).read().splitlines()
    limit_line = next(i for i, l in enumerate(lines, 1) if "limit" in l)
    assert re.search(re.escape(yaml_path) + f":{limit_line}:\\d+: .*500.*maximum 100", r.stderr), \
        r.stderr
    assert "did you mean 'label'" in r.stderr


def test_check_config_yaml_syntax_and_env():
    s = Server(plugins={})
    with open(s.config_path, "w") as f:
        f.write("server:\n  port: [1, 2\n")
    r = onaird("-c", s.config_path, "--check-config")
    assert r.returncode == 1 and re.search(re.escape(s.config_path) + r":\d+:\d+: ", r.stderr)
    with open(s.config_path, "w") as f:
        f.write("server:\n  port: ${ONAIR_IT_PORT}\nplugins:\n  conf_dir: plugins\n")
    r = onaird("-c", s.config_path, "--check-config", env={"ONAIR_IT_PORT": "9999"})
    assert r.returncode == 0, r.stderr
    env = dict(os.environ)
    env.pop("ONAIR_IT_PORT", None)
    r = subprocess.run([ONAIRD, "-c", s.config_path, "--check-config"], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 1 and "ONAIR_IT_PORT" in r.stderr
    assert f"{s.config_path}:2:9: " in r.stderr, r.stderr


def test_print_config_redacts_secrets():
    s = Server(plugins={"testkit": {"config": {"secret_token": "${IT_SECRET}"}}})
    r = onaird("-c", s.config_path, "--print-config", env={"IT_SECRET": "hunter2-secret"})
    assert r.returncode == 0, r.stderr
    assert "hunter2-secret" not in r.stdout
    assert "integration-test-secret" not in r.stdout  # auth.jwt_secret
    body = json.loads(r.stdout[r.stdout.index("{"):])
    assert body["plugins"]["testkit"]["config"]["secret_token"] == "***"
    assert body["core"]["auth"]["jwt_secret"] == "***"
    assert body["core"]["server"]["max_body_bytes"] == 1048576


def test_list_plugins():
    s = Server(plugins={"testkit": {}, "bad_magic": {}, "hello": {"enabled": False}})
    r = onaird("-c", s.config_path, "--list-plugins")
    assert r.returncode == 0, r.stderr
    assert re.search(r"testkit\s+yes\s+1\.0\.0\s+loaded", r.stdout), r.stdout
    assert re.search(r"bad_magic\s+yes\s+-\s+failed\s+bad descriptor magic", r.stdout), r.stdout
    assert re.search(r"hello\s+no\s+", r.stdout)


def test_failing_plugins_are_skipped_and_reported(server_factory):
    s = server_factory(plugins={"testkit": {}, "bad_major_v2": {}, "failing_init": {},
                                "name_mismatch": {}}).start()
    plugins = {p["name"]: p for p in s.http("GET", "/api/v1/server").json()["plugins"]}
    assert plugins["testkit"]["state"] == "started"
    assert "ABI major 2" in plugins["bad_major_v2"]["error"]
    assert "init failed" in plugins["failing_init"]["error"]
    assert "other_name" in plugins["name_mismatch"]["error"]
    # rolled back: the failing plugin's route does not exist
    assert s.http("GET", "/api/v1/failing_init").status == 404
    assert s.http("GET", "/readyz").status == 200
    log = s.log()
    assert re.search(r"plugin 'bad_major_v2' \(.*bad_major_v2\.so\): built for plugin ABI major 2",
                     log)


def test_a_plugin_cannot_claim_the_cores_route_flags(server_factory):
    # core_flag registers a route the size of an ABI 1.4 descriptor with the core's own-auth
    # bit set: refused (init fails, nothing registered), not served without authentication
    s = server_factory(plugins={"testkit": {}, "core_flag": {}}).start()
    plugins = {p["name"]: p for p in s.http("GET", "/api/v1/server").json()["plugins"]}
    assert plugins["core_flag"]["state"] == "failed", plugins["core_flag"]
    assert s.http("GET", "/api/v1/core_flag").status == 404
    assert "route refused: unknown flags 0x40000000" in s.log()


def test_required_plugin_failure_stops_startup(server_factory):
    s = server_factory(plugins={"testkit": {}, "failing_init": {"required": True}})
    s.start(wait=False)
    assert s.proc.wait(30) == 1
    s._reader.join(5)
    assert "failing_init" in s.log()
    s.check_sanitizers()


def test_missing_plugin_file(server_factory):
    s = server_factory(plugins={"testkit": {}, "ghost": {"path": "/nonexistent/ghost.so"}}).start()
    plugins = {p["name"]: p for p in s.http("GET", "/api/v1/server").json()["plugins"]}
    assert "cannot open plugin file" in plugins["ghost"]["error"]


def test_port_in_use_fails_cleanly(server_factory):
    a = server_factory(plugins={}).start()
    # libwebsockets itself leaks 72 bytes when its vhost cannot bind: suppressed here only
    supp = os.path.join(os.path.dirname(__file__), "..", "lsan.supp")
    b = server_factory(plugins={}, core={"server": {"port": a.port}},
                       env={"LSAN_OPTIONS": "suppressions=" + os.path.abspath(supp)})
    b.start(wait=False)
    assert b.proc.wait(30) == 1
    b._reader.join(5)
    b.check_sanitizers()


def test_graceful_shutdown_finishes_in_flight_request(server_factory):
    s = server_factory(plugins={"testkit": {}, "hello": {}},
                       core={"logging": {"level": "debug"}}).start()
    result = {}

    def slow_request():
        conn = s.connection(timeout=20)
        result["r"] = request(conn, "GET", "/api/v1/testkit/slow?ms=1500")

    def slow_work():
        conn = s.connection(timeout=20)
        result["w"] = request(conn, "POST", "/api/v1/hello/slow?ms=1000")

    threads = [threading.Thread(target=slow_request), threading.Thread(target=slow_work)]
    for t in threads:
        t.start()
    # both requests reached their plugins before the signal
    assert s.wait_log(r"slow request pending for 1500 ms", 20)
    assert s.wait_log(r"hello: slow job sleeping 1000 ms", 20)
    import asyncio
    import websockets

    async def ws_closed_with_1001():
        async with websockets.connect(s.ws_url) as ws:
            s.proc.send_signal(15)
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except websockets.ConnectionClosed as e:
                return e.code

    code = asyncio.run(ws_closed_with_1001())
    for t in threads:
        t.join(20)
    assert result["r"].status == 200 and result["r"].json() == {"slow": True}
    assert result["w"].status == 200 and result["w"].json() == {"slept_ms": 1000}
    assert code == 1001
    assert s.proc.wait(20) == 0
    s._reader.join(5)
    log = s.log()
    assert "shutting down gracefully" in log
    s.check_sanitizers()


def test_plugin_built_against_previous_sdk_loads(server_factory):
    """old_abi.so is compiled against the ABI 1.0 headers (tests/abi/sdk-1.0): its API
    table view is shorter, and it must load and work in this 1.1 host."""
    s = server_factory(plugins={"old_abi": {}}).start()
    r = s.http("GET", "/api/v1/old_abi")
    assert r.status == 200
    assert r.json() == {"built_for_minor": 0, "host_minor": ABI_MINOR}
