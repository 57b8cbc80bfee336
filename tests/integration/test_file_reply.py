"""File answers (SDK ABI 1.6 target_reply_file): the network thread streams a file with byte
ranges (206, 416), ETag / If-None-Match (304), If-Range, HEAD, gzip for text types, and a slow
reader (backpressure) gets every byte. Served by the test plugin tests/plugins/filetest.c."""
import gzip
import http.client
import os
import socket
import time

import pytest


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "files"
    d.mkdir()
    big = os.urandom(3 * 1024 * 1024 + 12345)  # several pieces of 64 KiB
    (d / "video.webm").write_bytes(big)
    text = ("hello, onair " * 20000).encode()
    (d / "app.js").write_bytes(text)
    (d / "page.html").write_bytes(b"<!doctype html><title>x</title>" * 100)
    (d / "empty.txt").write_bytes(b"")
    return d, big, text


@pytest.fixture
def srv(server_factory, files):
    d, _, _ = files
    return server_factory(plugins={"filetest": {"config": {"dir": str(d)}}}).start()


def get(srv, path, headers=None, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        c.close()


def test_whole_file_etag_and_type(srv, files):
    _, big, _ = files
    st, h, body = get(srv, "/api/v1/filetest/video.webm")
    assert st == 200
    assert body == big
    assert h["content-type"] == "video/webm"
    assert h["content-length"] == str(len(big))
    assert h["accept-ranges"] == "bytes"
    assert h["etag"].startswith('"') and h["etag"].endswith('"')
    assert h["cache-control"] == "no-cache"
    assert "last-modified" in h
    assert h["x-filetest"] == "1"  # headers set before the file answer go out too
    # explicit type and cache control, download name
    st, h, _ = get(srv, "/api/v1/filetest/video.webm?type=application/x-test&cc=public,%20max-age=60"
                   "&dl=my%20clip.webm")
    assert st == 200
    assert h["content-type"] == "application/x-test"
    assert h["cache-control"] == "public, max-age=60"
    assert h["content-disposition"] == 'attachment; filename="my clip.webm"'


def test_ranges(srv, files):
    _, big, _ = files
    n = len(big)
    st, h, body = get(srv, "/api/v1/filetest/video.webm", {"Range": "bytes=100-199"})
    assert st == 206
    assert body == big[100:200]
    assert h["content-range"] == "bytes 100-199/%d" % n
    assert h["content-length"] == "100"
    # open-ended, from the middle (what a <video> element asks for when it seeks)
    st, h, body = get(srv, "/api/v1/filetest/video.webm", {"Range": "bytes=%d-" % (n // 2)})
    assert st == 206 and body == big[n // 2:]
    assert h["content-range"] == "bytes %d-%d/%d" % (n // 2, n - 1, n)
    # suffix, and an end past the file
    st, h, body = get(srv, "/api/v1/filetest/video.webm", {"Range": "bytes=-500"})
    assert st == 206 and body == big[-500:]
    st, h, body = get(srv, "/api/v1/filetest/video.webm", {"Range": "bytes=%d-%d" % (n - 10, n + 1000)})
    assert st == 206 and body == big[-10:]
    # outside the file: 416 with the size
    st, h, body = get(srv, "/api/v1/filetest/video.webm", {"Range": "bytes=%d-" % n})
    assert st == 416
    assert h["content-range"] == "bytes */%d" % n
    assert body == b""
    # several ranges or bad syntax: the whole file
    st, _, body = get(srv, "/api/v1/filetest/video.webm", {"Range": "bytes=0-1,5-6"})
    assert st == 200 and body == big
    st, _, body = get(srv, "/api/v1/filetest/video.webm", {"Range": "bytes=abc"})
    assert st == 200 and body == big
    # no ranges when the plugin says so
    st, h, body = get(srv, "/api/v1/filetest/video.webm?noranges=1", {"Range": "bytes=0-9"})
    assert st == 200 and body == big and h["accept-ranges"] == "none"


def test_conditional(srv, files):
    d, big, _ = files
    st, h, _ = get(srv, "/api/v1/filetest/video.webm", method="HEAD")
    assert st == 200
    assert h["content-length"] == str(len(big))
    etag = h["etag"]
    st, h2, body = get(srv, "/api/v1/filetest/video.webm", {"If-None-Match": etag})
    assert st == 304 and body == b""
    assert h2["etag"] == etag
    st, _, _ = get(srv, "/api/v1/filetest/video.webm", {"If-None-Match": 'W/"x", ' + etag})
    assert st == 304
    st, _, _ = get(srv, "/api/v1/filetest/video.webm", {"If-None-Match": '"other"'})
    assert st == 200
    # If-Range with the current tag: the range; with an old one: the whole file
    st, _, body = get(srv, "/api/v1/filetest/video.webm", {"Range": "bytes=0-9", "If-Range": etag})
    assert st == 206 and body == big[:10]
    st, _, body = get(srv, "/api/v1/filetest/video.webm", {"Range": "bytes=0-9", "If-Range": '"old"'})
    assert st == 200 and body == big
    # a changed file gets a new tag: the old one no longer matches
    time.sleep(0.01)
    (d / "video.webm").write_bytes(big[:1000])
    st, h3, body = get(srv, "/api/v1/filetest/video.webm", {"If-None-Match": etag})
    assert st == 200 and body == big[:1000]
    assert h3["etag"] != etag


def test_missing_and_empty(srv):
    st, h, body = get(srv, "/api/v1/filetest/nope.bin")
    assert st == 404
    assert h["content-type"] == "application/problem+json"
    assert b'"code":"not_found"' in body
    st, h, body = get(srv, "/api/v1/filetest/empty.txt")
    assert st == 200 and body == b"" and h["content-length"] == "0"
    st, _, _ = get(srv, "/api/v1/filetest/empty.txt", {"Range": "bytes=0-"})
    assert st == 416


def test_gzip(srv, files):
    d, big, text = files
    st, h, body = get(srv, "/api/v1/filetest/app.js?gz=1", {"Accept-Encoding": "gzip, br"})
    assert st == 200
    assert h["content-encoding"] == "gzip"
    assert h["transfer-encoding"] == "chunked"
    assert h["vary"] == "Accept-Encoding"
    assert h["content-type"] == "text/javascript; charset=utf-8"
    assert gzip.decompress(body) == text
    assert len(body) < len(text) // 10
    gz_etag = h["etag"]
    st, _, _ = get(srv, "/api/v1/filetest/app.js?gz=1", {"Accept-Encoding": "gzip",
                                                          "If-None-Match": gz_etag})
    assert st == 304
    # a client that does not take gzip, or refuses it, gets the plain file with another tag
    st, h, body = get(srv, "/api/v1/filetest/app.js?gz=1", {"Accept-Encoding": "gzip;q=0"})
    assert st == 200 and body == text and "content-encoding" not in h
    assert h["etag"] != gz_etag
    # binary types are never compressed
    st, h, body = get(srv, "/api/v1/filetest/video.webm?gz=1", {"Accept-Encoding": "gzip"})
    assert st == 200 and body == big and "content-encoding" not in h
    # a precompressed sibling is sent as it is
    pre = gzip.compress(b"<!doctype html><title>x</title>" * 100, 9)
    (d / "page.html.gz").write_bytes(pre)
    st, h, body = get(srv, "/api/v1/filetest/page.html?gz=1", {"Accept-Encoding": "gzip"})
    assert st == 200 and body == pre
    assert h["content-length"] == str(len(pre))


def test_slow_reader_gets_every_byte(srv, files):
    """A client that reads slowly: the server writes as the socket drains (no piece is lost or
    repeated) and a second client is served meanwhile."""
    _, big, _ = files
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    s.sendall(b"GET /api/v1/filetest/video.webm HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    time.sleep(0.5)  # let the server fill the socket and wait for it to drain
    st, _, body = get(srv, "/api/v1/filetest/page.html")
    assert st == 200 and len(body) > 0
    while True:
        c = s.recv(16384)
        if not c:
            break
        data += c
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep and len(rest) >= len(big):
            break
    s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert rest == big


def test_keepalive_after_file(srv, files):
    """The connection serves the next request after a file answer (and after a 304)."""
    _, big, _ = files
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    try:
        for hdrs in ({}, {"Range": "bytes=0-99"}, {}):
            c.request("GET", "/api/v1/filetest/video.webm", headers=hdrs)
            r = c.getresponse()
            b = r.read()
            assert r.status in (200, 206)
            assert b == (big if r.status == 200 else big[:100])
        etag = r.getheader("ETag")
        c.request("GET", "/api/v1/filetest/video.webm", headers={"If-None-Match": etag})
        r = c.getresponse()
        assert r.status == 304 and r.read() == b""
        c.request("GET", "/api/v1/filetest/page.html")
        r = c.getresponse()
        assert r.status == 200 and r.read().startswith(b"<!doctype")
    finally:
        c.close()


def test_bad_name(srv):
    st, _, body = get(srv, "/api/v1/filetest/..%2Fetc")
    assert st in (400, 404)
