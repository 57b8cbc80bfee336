"""The SDK guide's own example, built from docs/plugin-sdk.md alone and run in a real onaird.

"A plugin in fifteen minutes" must stay true: its code block is compiled as a third party
would (only the public headers, -Wall -Wextra -Werror), loaded, and driven over REST and
WebSocket, bad bodies included.
"""
import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile

import websockets

from onair_harness import make_token

SOURCE = os.environ.get("ONAIR_SOURCE_DIR", ".")


def guide_plugin_source():
    with open(os.path.join(SOURCE, "docs/plugin-sdk.md")) as f:
        text = f.read()
    section = text.split("## A plugin in fifteen minutes", 1)[1]
    return re.search(r"```c\n(.*?)```", section, re.S).group(1)


def build_guide_plugin(tmp):
    src = os.path.join(tmp, "tasks.c")
    with open(src, "w") as f:
        f.write(guide_plugin_source())
    jansson = subprocess.run(["pkg-config", "--cflags", "jansson"], capture_output=True,
                             text=True, check=True).stdout.split()
    so = os.path.join(tmp, "tasks.so")
    cc = subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror",
                         "-fPIC", "-shared", "-fvisibility=hidden",
                         "-I", os.path.join(SOURCE, "sdk/include"), *jansson, src, "-o", so],
                        capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    exports = subprocess.run(["nm", "-D", "--defined-only", so], capture_output=True, text=True,
                             check=True).stdout.split()
    assert "onair_plugin_entry_v1" in exports
    return so


def test_the_guides_plugin_builds_loads_and_answers(server_factory):
    tmp = tempfile.mkdtemp(prefix="onair-guide-")
    try:
        so = build_guide_plugin(tmp)
        s = server_factory(plugins={"tasks": {"path": so}}).start()
        token = make_token(sub="ada")
        r = s.http("POST", "/api/v1/tasks", body={"title": "ship it"}, token=token)
        assert r.status == 201 and len(r.json()["id"]) == 24, r
        for body, code, field in [({"title": "x", "colour": "red"}, "unknown_field", "colour"),
                                  ({}, "missing_field", "title"),
                                  ({"title": "x", "due": "soon"}, "invalid_field", "due"),
                                  ({"title": "x" * 81}, "invalid_field", "title")]:
            r = s.http("POST", "/api/v1/tasks", body=body, token=token)
            assert r.status == 400, r
            assert r.json()["code"] == code and r.json()["field"] == field, r
        assert s.http("POST", "/api/v1/tasks", body={"title": "x"}).status == 401

        async def ws():
            headers = {"Authorization": "Bearer " + token}
            async with websockets.connect(s.ws_url, extra_headers=headers) as c:
                await c.send(json.dumps({"type": "tasks.add", "id": 1, "data": {"title": "w"}}))
                ok = json.loads(await asyncio.wait_for(c.recv(), 10))
                await c.send(json.dumps({"type": "tasks.add", "id": 2, "data": {"titel": "w"}}))
                bad = json.loads(await asyncio.wait_for(c.recv(), 10))
                return ok, bad

        ok, bad = asyncio.run(ws())
        assert ok["type"] == "result" and len(ok["data"]["id"]) == 24, ok
        assert bad["type"] == "error" and bad["data"]["code"] == "unknown_field"
        assert bad["data"]["field"] == "titel"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
