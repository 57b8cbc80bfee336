import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from onair_harness import Server  # noqa: E402


@pytest.fixture
def server_factory():
    """Make servers that are always stopped (and checked for sanitizer reports)."""
    servers = []

    def make(**kw):
        s = Server(**kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        try:
            s.stop()
        finally:
            s.kill()


@pytest.fixture
def server(server_factory):
    """A running onaird with the testkit and hello plugins."""
    return server_factory(plugins={"testkit": {}, "hello": {}}).start()
