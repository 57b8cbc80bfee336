"""Verification plugin end to end: real accounts, a real SMTP server (aiosmtpd) that
receives the mail, the code and the link read from that mail, and the verified-account
gate (testkit's GET /api/v1/testkit/verified) going from 403 to 200."""
import base64
import json
import os
import re
import sys
import threading
import time
import urllib.parse

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from onair_harness import PLUGIN_DIR, Server, make_token  # noqa: E402
from smtp_sink import SmtpSink  # noqa: E402

# aiosmtpd warns on every session that AUTH without TLS is unsafe: loopback only here.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

SMTP_USER = "onair-mailer"
SMTP_PASS = "smtp-pass-7f3a9c"
PASSWORD = "correct horse battery staple"
LINK_BASE = "https://app.example.org/verify"
GATED = "/api/v1/testkit/verified"
CODE_RX = re.compile(r"code is: (\d{6})\b")
LINK_RX = re.compile(re.escape(LINK_BASE) + r"\?token=([A-Za-z0-9_-]{43})\b")


def server_kwargs(sink_url, **config):
    cfg = {
        "smtp": {"url": sink_url, "username": SMTP_USER,
                 "password": "${ONAIR_TEST_SMTP_PASSWORD}", "timeout_ms": 5000},
        "from": "onair <no-reply@onair.test>",
        "link_base_url": LINK_BASE,
    }
    cfg.update(config)
    return {"plugins": {"verification": {"path": os.path.join(PLUGIN_DIR, "verification.so"),
                                         "config": cfg},
                        "testkit": {}},
            "core": {"auth": {"password_hash": "interactive"}},
            "env": {"ONAIR_TEST_SMTP_PASSWORD": SMTP_PASS}}


@pytest.fixture(scope="module")
def env():
    sink = SmtpSink(username=SMTP_USER, password=SMTP_PASS).start()
    srv = Server(**server_kwargs(sink.url)).start()
    yield srv, sink
    try:
        assert srv.stop() == 0
    finally:
        srv.kill()
        sink.stop()


def claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class Account:
    def __init__(self, srv, name):
        self.srv = srv
        self.username = name + base64.b32encode(os.urandom(5)).decode().lower()
        self.email = self.username + "@example.org"
        r = srv.http("POST", "/api/v1/auth/register",
                     {"username": self.username, "email": self.email, "password": PASSWORD})
        assert r.status in (200, 201), r
        body = r.json()
        self.token = body["access_token"]
        self.refresh_token = body.get("refresh_token")
        self.id = claims(self.token)["sub"]

    def call(self, method, path, body=None, **kw):
        return self.srv.http(method, path, body, token=self.token, **kw)

    def new_token(self):
        """A freshly issued access token (refresh if offered, else log in again)."""
        if self.refresh_token:
            r = self.srv.http("POST", "/api/v1/auth/refresh",
                              {"refresh_token": self.refresh_token})
        else:
            r = self.srv.http("POST", "/api/v1/auth/login",
                              {"username": self.username, "password": PASSWORD})
        assert r.status == 200, r
        return r.json()["access_token"]


def problem(r, status, code):
    assert r.status == status, r
    assert r.header("Content-Type").startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["code"] == code, body
    return body


def read_mail(sink, acct):
    """Wait for the account's next mail; return (code, token, mail)."""
    mail = sink.wait_for(acct.email)
    code = CODE_RX.search(mail.body)
    link = LINK_RX.search(mail.body)
    assert code and link, mail.body
    return code.group(1), link.group(1), mail


def wrong(code):
    return "%06d" % ((int(code) + 1) % 1000000)


def start(acct, status=202):
    r = acct.call("POST", "/api/v1/verification/start")
    assert r.status == status, r
    return r


def link(srv, token, **kw):
    return srv.http("GET", "/api/v1/verification/link?token=" + urllib.parse.quote(token), **kw)


def test_code_flow_end_to_end(env):
    srv, sink = env
    alice = Account(srv, "alice")
    assert not claims(alice.token).get("verified")
    body = problem(alice.call("GET", GATED), 403, "verification_required")
    assert "POST /api/v1/verification/start" in body["detail"]  # where to start
    st = alice.call("GET", "/api/v1/verification/status")
    assert st.status == 200 and st.json() == {"verified": False, "pending": False,
                                              "expires_at": None, "attempts_left": None}, st

    r = start(alice)
    assert r.json() == {"sent": True, "expires_in": 900}
    code, token, mail = read_mail(sink, alice)
    # The message as the mail server received it.
    assert mail.mail_from == "no-reply@onair.test"
    assert mail.rcpt_tos == [alice.email]
    assert mail.login == SMTP_USER  # SMTP AUTH with the password from the environment
    assert mail.message["Subject"] == "Your onair verification code"
    assert mail.message["To"].addresses[0].addr_spec == alice.email
    assert "no-reply@onair.test" in mail.message["From"]
    assert mail.message["Date"] and mail.message["Message-ID"]

    st = alice.call("GET", "/api/v1/verification/status").json()
    assert st["verified"] is False and st["pending"] is True and st["attempts_left"] == 5
    assert st["expires_at"] > time.time() * 1000

    # Bad input is refused without costing an attempt.
    problem(alice.call("POST", "/api/v1/verification/verify", {"code": "12ab56"}), 400,
            "invalid_request")
    problem(alice.call("POST", "/api/v1/verification/verify", {"code": 123456}), 400,
            "invalid_request")
    problem(alice.call("POST", "/api/v1/verification/verify", {}), 400, "invalid_request")
    problem(alice.call("POST", "/api/v1/verification/verify", {"code": code, "x": 1}), 400,
            "unknown_field")
    r = alice.call("POST", "/api/v1/verification/verify", "{not json",
                   headers={"Content-Type": "application/json"})
    assert r.status == 400, r
    assert alice.call("GET", "/api/v1/verification/status").json()["attempts_left"] == 5

    body = problem(alice.call("POST", "/api/v1/verification/verify", {"code": wrong(code)}), 400,
                   "invalid_code")
    assert body["attempts_left"] == 4
    problem(alice.call("GET", GATED), 403, "verification_required")

    r = alice.call("POST", "/api/v1/verification/verify", {"code": code})
    assert r.status == 200 and r.json() == {"verified": True}, r

    # The gate opens for the same access token: the host reads the live account state.
    r = alice.call("GET", GATED)
    assert r.status == 200 and r.json() == {"ok": True}, r
    # New tokens say so too.
    fresh = alice.new_token()
    assert claims(fresh)["verified"] is True
    assert srv.http("GET", GATED, token=fresh).status == 200

    # Single use: neither the code nor the link of that mail works again.
    problem(alice.call("POST", "/api/v1/verification/verify", {"code": code}), 400,
            "no_active_code")
    problem(link(srv, token), 400, "invalid_link")
    problem(alice.call("POST", "/api/v1/verification/start"), 409, "already_verified")
    assert alice.call("GET", "/api/v1/verification/status").json() == {
        "verified": True, "pending": False, "expires_at": None, "attempts_left": None}

    # Codes, link tokens and the SMTP password never reach the log.
    log = srv.log()
    assert code not in log and token not in log and SMTP_PASS not in log


def test_link_flow(env):
    srv, sink = env
    bob = Account(srv, "bob")
    start(bob)
    code, token, _ = read_mail(sink, bob)
    problem(bob.call("GET", GATED), 403, "verification_required")

    problem(link(srv, "x" * 43), 400, "invalid_link")  # forged
    problem(link(srv, token[:-1]), 400, "invalid_link")  # malformed
    problem(srv.http("GET", "/api/v1/verification/link"), 400, "invalid_link")

    # Clicked in a mail client: no access token, an HTML page.
    r = link(srv, token, headers={"Accept": "text/html"})
    assert r.status == 200, r
    assert r.header("Content-Type").startswith("text/html")
    assert "verified" in r.body

    r = bob.call("GET", GATED)
    assert r.status == 200, r
    assert claims(bob.new_token())["verified"] is True
    problem(link(srv, token), 400, "invalid_link")
    problem(bob.call("POST", "/api/v1/verification/verify", {"code": code}), 400,
            "no_active_code")


def test_link_json_and_start_body(env):
    srv, sink = env
    erin = Account(srv, "erin")
    problem(erin.call("POST", "/api/v1/verification/start", {"email": "x@example.org"}), 400,
            "unknown_field")
    r = erin.call("POST", "/api/v1/verification/start", "[1]",
                  headers={"Content-Type": "application/json"})
    assert r.status == 400, r
    problem(srv.http("POST", "/api/v1/verification/start"), 401, "unauthorized")
    problem(srv.http("GET", "/api/v1/verification/status"), 401, "unauthorized")
    r = erin.call("POST", "/api/v1/verification/start", {})
    assert r.status == 202, r
    _, token, _ = read_mail(sink, erin)
    r = link(srv, token, headers={"Accept": "application/json"})
    assert r.status == 200 and r.json() == {"verified": True}, r
    assert erin.call("GET", GATED).status == 200


def test_five_wrong_codes_burn_the_code(env):
    srv, sink = env
    carol = Account(srv, "carol")
    start(carol)
    code, token, _ = read_mail(sink, carol)
    bad = wrong(code)
    for left in (4, 3, 2, 1):
        body = problem(carol.call("POST", "/api/v1/verification/verify", {"code": bad}), 400,
                       "invalid_code")
        assert body["attempts_left"] == left
    problem(carol.call("POST", "/api/v1/verification/verify", {"code": bad}), 400, "code_burnt")
    # Burnt: the right code and the link are useless now.
    problem(carol.call("POST", "/api/v1/verification/verify", {"code": code}), 400,
            "no_active_code")
    problem(link(srv, token), 400, "invalid_link")
    assert carol.call("GET", "/api/v1/verification/status").json()["pending"] is False
    problem(carol.call("GET", GATED), 403, "verification_required")
    # Starting again gives a fresh code that works.
    start(carol)
    code2, _, _ = read_mail(sink, carol)
    assert carol.call("POST", "/api/v1/verification/verify", {"code": code2}).status == 200
    assert carol.call("GET", GATED).status == 200


def test_concurrent_guesses_get_five_tries(env):
    srv, sink = env
    kim = Account(srv, "kim")
    start(kim)
    code, _, _ = read_mail(sink, kim)
    bad = wrong(code)
    results = []
    lock = threading.Lock()

    def guess():
        r = kim.call("POST", "/api/v1/verification/verify", {"code": bad})
        with lock:
            results.append((r.status, r.json()["code"]))

    threads = [threading.Thread(target=guess) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    codes = sorted(c for _, c in results)
    assert len(results) == 12 and all(s == 400 for s, _ in results), results
    # Each guess takes an attempt before it is compared: 5 tries at most, however parallel.
    assert codes.count("invalid_code") == 4 and codes.count("code_burnt") == 1, codes
    assert codes.count("no_active_code") == 7, codes
    problem(kim.call("POST", "/api/v1/verification/verify", {"code": code}), 400,
            "no_active_code")


def test_resend_limit_and_replaced_codes(env):
    srv, sink = env
    dave = Account(srv, "dave")
    mails = []
    for _ in range(3):
        start(dave)
        mails.append(read_mail(sink, dave))
    r = dave.call("POST", "/api/v1/verification/start")
    body = problem(r, 429, "rate_limited")
    retry = int(r.header("Retry-After"))
    assert retry > 0 and body["retry_after_s"] == retry
    # No fourth mail went out.
    with pytest.raises(AssertionError):
        sink.wait_for(dave.email, timeout=1)

    # A new mail replaces the older codes and links.
    (code1, token1, _), _, (code3, token3, _) = mails
    problem(link(srv, token1), 400, "invalid_link")
    if code1 != code3:
        problem(dave.call("POST", "/api/v1/verification/verify", {"code": code1}), 400,
                "invalid_code")
    r = dave.call("POST", "/api/v1/verification/verify", {"code": code3})
    assert r.status == 200, r
    problem(link(srv, token3), 400, "invalid_link")


def test_admin_marks_verified(env):
    srv, _ = env
    frank = Account(srv, "frank")
    path = "/api/v1/verification/users/" + frank.id
    problem(frank.call("POST", path, {"verified": True}), 403, "forbidden")
    admin = make_token(sub="admin-" + frank.username, roles=("admin",))
    problem(srv.http("POST", path, {"verified": "yes"}, token=admin), 400, "invalid_request")
    problem(srv.http("POST", path, {"verified": True, "why": 1}, token=admin), 400,
            "unknown_field")
    problem(srv.http("POST", "/api/v1/verification/users/000000000000000000000000",
                     {"verified": True}, token=admin), 404, "user_not_found")
    r = srv.http("POST", path, {"verified": True}, token=admin)
    assert r.status == 200 and r.json() == {"id": frank.id, "verified": True}, r
    assert frank.call("GET", GATED).status == 200
    assert frank.call("GET", "/api/v1/verification/status").json()["verified"] is True
    r = srv.http("POST", path, {"verified": False}, token=admin)
    assert r.status == 200 and r.json()["verified"] is False, r
    problem(frank.call("GET", GATED), 403, "verification_required")


def wait_until(pred, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


def test_expired_code(server_factory):
    sink = SmtpSink(username=SMTP_USER, password=SMTP_PASS).start()
    try:
        srv = server_factory(**server_kwargs(sink.url, code_ttl_s=2)).start()
        gina = Account(srv, "gina")
        r = start(gina)
        assert r.json()["expires_in"] == 2
        code, token, _ = read_mail(sink, gina)
        assert wait_until(lambda: not gina.call(
            "GET", "/api/v1/verification/status").json()["pending"])
        problem(gina.call("POST", "/api/v1/verification/verify", {"code": code}), 400,
                "no_active_code")
        problem(link(srv, token), 400, "invalid_link")
        problem(gina.call("GET", GATED), 403, "verification_required")
        assert srv.stop() == 0
    finally:
        sink.stop()


def test_smtp_failures(server_factory):
    sink = SmtpSink(username=SMTP_USER, password=SMTP_PASS)  # not started: nothing listens
    srv = server_factory(**server_kwargs(sink.url)).start()
    hank = Account(srv, "hank")
    body = problem(hank.call("POST", "/api/v1/verification/start"), 502, "mail_failed")
    assert body["detail"]
    # The server keeps serving, and no code is pending.
    assert srv.http("GET", "/healthz").status == 200
    assert hank.call("GET", "/api/v1/verification/status").json()["pending"] is False

    # The mail server comes back: the next start works.
    sink.start()
    try:
        start(hank)
        code, _, _ = read_mail(sink, hank)
        assert hank.call("POST", "/api/v1/verification/verify", {"code": code}).status == 200
    finally:
        sink.stop()
    assert SMTP_PASS not in srv.log()


def test_smtp_auth_refused(server_factory):
    sink = SmtpSink(username=SMTP_USER, password="another-password").start()
    try:
        srv = server_factory(**server_kwargs(sink.url)).start()
        ivy = Account(srv, "ivy")
        problem(ivy.call("POST", "/api/v1/verification/start"), 502, "mail_failed")
        assert sink.count() == 0
    finally:
        sink.stop()


def test_bad_config_refused(server_factory):
    srv = server_factory(plugins={"verification": {
        "path": os.path.join(PLUGIN_DIR, "verification.so"),
        "config": {"smtp": {"url": "http://127.0.0.1:25"}, "from": "no-reply@onair.test"}}})
    srv.start(wait=False)
    assert srv.wait_log(r"smtp\.url must start with smtp:// or smtps://", 15), srv.log()
