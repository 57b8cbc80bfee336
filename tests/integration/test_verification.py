"""Verification plugin end to end: real accounts, a real SMTP server (aiosmtpd) that
receives the mail, the code and the link read from that mail, and the verified-account
gate (testkit's GET /api/v1/testkit/verified) going from 403 to 200. The development
transports (maildir files, the server log) and the link's default base (derived from the
address the server listens on) are covered at the end."""
import base64
import email
import email.policy
import glob
import json
import os
import re
import stat
import sys
import threading
import time
import urllib.parse

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from onair_harness import PLUGIN_DIR, Server, free_port, make_token  # noqa: E402
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


def server_kwargs(sink_url, link_base=LINK_BASE, server=None, **config):
    """Keyword arguments of a Server with the verification plugin mailing to sink_url;
    link_base=None leaves link_base_url out (the plugin derives the link)."""
    cfg = {
        "smtp": {"url": sink_url, "username": SMTP_USER,
                 "password": "${ONAIR_TEST_SMTP_PASSWORD}", "timeout_ms": 5000},
        "from": "onair <no-reply@onair.test>",
    }
    if link_base is not None:
        cfg["link_base_url"] = link_base
    cfg.update(config)
    core = {"auth": {"password_hash": "interactive"}}
    if server:
        core["server"] = server
    return {"plugins": {"verification": {"path": os.path.join(PLUGIN_DIR, "verification.so"),
                                         "config": cfg},
                        "testkit": {}},
            "core": core,
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


def problem(r, status, code, field=None):
    """The problem+json answer r: status, code and, for body mistakes, the field named."""
    assert r.status == status, r
    assert r.header("Content-Type").startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["code"] == code and body["status"] == status, body
    assert body.get("field") == field, body
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

    # Bad input is refused without costing an attempt: the body's schema (host) and the
    # digits check (plugin) answer in the one error vocabulary, naming the field.
    verify = "/api/v1/verification/verify"
    for bad in ("12ab56", "12345", "1234567", "١٢٣٤٥٦", 123456, None, ["123456"]):
        problem(alice.call("POST", verify, {"code": bad}), 400, "invalid_field", "code")
    problem(alice.call("POST", verify, {}), 400, "missing_field", "code")
    problem(alice.call("POST", verify, {"code": code, "x": 1}), 400, "unknown_field", "x")
    problem(alice.call("POST", verify, "{not json", headers={"Content-Type": "application/json"}),
            400, "invalid_json")
    assert alice.call("GET", "/api/v1/verification/status").json()["attempts_left"] == 5

    body = problem(alice.call("POST", "/api/v1/verification/verify", {"code": wrong(code)}), 400,
                   "invalid_code", "code")
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
    # The body is optional (none or {}); members are refused with the field named.
    problem(erin.call("POST", "/api/v1/verification/start", {"email": "x@example.org"}), 400,
            "unknown_field", "email")
    problem(erin.call("POST", "/api/v1/verification/start", "[1]",
                      headers={"Content-Type": "application/json"}), 400, "invalid_json")
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
                       "invalid_code", "code")
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
                "invalid_code", "code")
    r = dave.call("POST", "/api/v1/verification/verify", {"code": code3})
    assert r.status == 200, r
    problem(link(srv, token3), 400, "invalid_link")


def test_admin_marks_verified(env):
    srv, _ = env
    frank = Account(srv, "frank")
    path = "/api/v1/verification/users/" + frank.id
    problem(frank.call("POST", path, {"verified": True}), 403, "forbidden")
    admin = make_token(sub="admin-" + frank.username, roles=("admin",))
    for bad in ("yes", 1, None):
        problem(srv.http("POST", path, {"verified": bad}, token=admin), 400, "invalid_field",
                "verified")
    problem(srv.http("POST", path, {}, token=admin), 400, "missing_field", "verified")
    problem(srv.http("POST", path, {"verified": True, "why": 1}, token=admin), 400,
            "unknown_field", "why")
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


# ---- the link's default base: where the server listens -----------------------------------

def any_link_rx(base):
    return re.compile(re.escape(base) + r"\?token=([A-Za-z0-9_-]{43})\b")


def test_link_uses_the_servers_own_port(server_factory):
    """No link_base_url and no public_url: the mailed link points at this server, on the
    port it listens on (not 8080), and it works."""
    port = free_port()
    assert port != 8080
    sink = SmtpSink(username=SMTP_USER, password=SMTP_PASS).start()
    try:
        srv = server_factory(**server_kwargs(sink.url, link_base=None,
                                             server={"port": port})).start()
        assert srv.port == port
        jill = Account(srv, "jill")
        start(jill)
        mail = sink.wait_for(jill.email)
        base = "http://127.0.0.1:%d/api/v1/verification/link" % port
        m = any_link_rx(base).search(mail.body)
        assert m, mail.body
        assert "localhost:8080" not in mail.body
        # The link as mailed reaches this server and verifies the account.
        url = urllib.parse.urlsplit(m.group(0))
        r = srv.http("GET", url.path + "?" + url.query, headers={"Accept": "application/json"})
        assert r.status == 200 and r.json() == {"verified": True}, r
        assert jill.call("GET", GATED).status == 200
        assert srv.stop() == 0
    finally:
        sink.stop()


def test_link_port_zero_and_public_url(server_factory):
    """server.port 0: the link has the port actually bound. public_url (trailing slash
    and all) wins over the listening address."""
    sink = SmtpSink(username=SMTP_USER, password=SMTP_PASS).start()
    try:
        srv = server_factory(**server_kwargs(sink.url, link_base=None)).start()  # port 0
        kate = Account(srv, "kate")
        start(kate)
        mail = sink.wait_for(kate.email)
        assert any_link_rx("http://127.0.0.1:%d/api/v1/verification/link" % srv.port).search(
            mail.body), mail.body
        assert srv.stop() == 0

        srv = server_factory(**server_kwargs(sink.url, link_base=None,
                                             public_url="https://live.example.org/")).start()
        lena = Account(srv, "lena")
        start(lena)
        mail = sink.wait_for(lena.email)
        assert any_link_rx("https://live.example.org/api/v1/verification/link").search(
            mail.body), mail.body
        assert srv.stop() == 0
    finally:
        sink.stop()


# ---- development transports ---------------------------------------------------------------

SHIPPED = os.path.join(os.path.dirname(__file__), "..", "..", "conf.d", "plugins",
                       "verification.yaml")
# The shipped file reads these; clear them so the test sees the file's own defaults.
SHIPPED_ENV = {"ONAIR_MAIL_TRANSPORT": "", "ONAIR_PUBLIC_URL": "", "ONAIR_SMTP_URL": "",
               "ONAIR_SMTP_USER": "", "ONAIR_SMTP_PASSWORD": ""}


def mail_files(srv):
    return sorted(glob.glob(os.path.join(srv.dir, "data", "mail", "*.eml")))


def read_eml(path):
    with open(path, "rb") as f:
        msg = email.message_from_bytes(f.read(), policy=email.policy.default)
    body = msg.get_body(preferencelist=("plain",)).get_content()
    return msg, body


def test_shipped_config_verifies_without_a_mail_server(server_factory):
    """conf.d/plugins/verification.yaml as `make run` uses it, on a machine with no mail
    server: the mail lands under <storage.data_dir>/mail and the account gets verified
    with the code (and another one with the link) read from the files."""
    with open(SHIPPED) as f:
        shipped = f.read()
    port = free_port()
    srv = server_factory(plugins={"testkit": {}},
                         extra_files={"plugins/verification.yaml": shipped},
                         core={"auth": {"password_hash": "interactive"},
                               "server": {"host": "0.0.0.0", "port": port}},
                         env=SHIPPED_ENV).start()
    assert srv.wait_log(r"transport: maildir is for DEVELOPMENT only"), srv.log()
    assert mail_files(srv) == []

    mia = Account(srv, "mia")
    r = start(mia)
    assert r.json() == {"sent": True, "expires_in": 900}
    files = mail_files(srv)
    assert len(files) == 1, files
    assert re.fullmatch(r"\d{13}-[0-9a-f]{24}\.eml", os.path.basename(files[0])), files
    assert stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600
    assert not [n for n in os.listdir(os.path.dirname(files[0])) if n.endswith(".tmp")]
    msg, body = read_eml(files[0])
    assert msg["To"].addresses[0].addr_spec == mia.email
    assert msg["Subject"] == "Your onair verification code"
    assert msg["From"] and msg["Date"] and msg["Message-ID"]
    code = CODE_RX.search(body)
    # 0.0.0.0 becomes localhost, and the port is this server's.
    link_m = any_link_rx("http://localhost:%d/api/v1/verification/link" % port).search(body)
    assert code and link_m, body
    assert srv.wait_log(r"verification mail for user %s written to .*%s" % (
        mia.id, re.escape(os.path.basename(files[0])))), srv.log()

    problem(mia.call("GET", GATED), 403, "verification_required")
    r = mia.call("POST", "/api/v1/verification/verify", {"code": code.group(1)})
    assert r.status == 200 and r.json() == {"verified": True}, r
    assert mia.call("GET", GATED).status == 200
    assert mia.call("GET", "/api/v1/verification/status").json()["verified"] is True

    # A second account verifies through the link in its file.
    ned = Account(srv, "ned")
    start(ned)
    files2 = [f for f in mail_files(srv) if f not in files]
    assert len(files2) == 1, files2
    _, body2 = read_eml(files2[0])
    link2 = any_link_rx("http://localhost:%d/api/v1/verification/link" % port).search(body2)
    assert link2, body2
    url = urllib.parse.urlsplit(link2.group(0))
    r = srv.http("GET", url.path + "?" + url.query)
    assert r.status == 200 and "verified" in r.body, r
    assert ned.call("GET", GATED).status == 200

    # The maildir transport keeps codes and links out of the log.
    log = srv.log()
    assert code.group(1) not in log and link_m.group(1) not in log and link2.group(1) not in log
    assert srv.stop() == 0


def test_log_transport(server_factory):
    """transport: log writes To, Subject, the code and the link to the server log (with a
    warning at start): read them from the log and verify."""
    srv = server_factory(plugins={
        "verification": {"path": os.path.join(PLUGIN_DIR, "verification.so"),
                         "config": {"transport": "log", "from": "no-reply@onair.test"}},
        "testkit": {}}, core={"auth": {"password_hash": "interactive"}}).start()
    warn = srv.wait_log(r"warn.*transport: log is for DEVELOPMENT only.*codes and links")
    assert warn, srv.log()
    olga = Account(srv, "olga")
    start(olga)
    m = srv.wait_log(r"info.*DEVELOPMENT mail \(transport: log.*To: <%s> Subject: Your onair "
                     r"verification code \| code: (\d{6}) \| link: (\S+)" % re.escape(olga.email))
    assert m, srv.log()
    code, link_url = m.group(1), m.group(2)
    assert any_link_rx("http://127.0.0.1:%d/api/v1/verification/link" % srv.port).fullmatch(
        link_url), link_url
    problem(olga.call("POST", "/api/v1/verification/verify", {"code": wrong(code)}), 400,
            "invalid_code", "code")
    r = olga.call("POST", "/api/v1/verification/verify", {"code": code})
    assert r.status == 200 and r.json() == {"verified": True}, r
    assert olga.call("GET", GATED).status == 200
    assert not os.path.exists(os.path.join(srv.dir, "data", "mail"))  # no files written
    assert srv.stop() == 0


def test_maildir_write_failure(server_factory, tmp_path):
    """An unwritable maildir: 502 mail_failed, nothing pending, the server keeps serving."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    srv = server_factory(plugins={
        "verification": {"path": os.path.join(PLUGIN_DIR, "verification.so"),
                         "config": {"transport": "maildir", "maildir": str(blocker / "mail"),
                                    "from": "no-reply@onair.test"}},
        "testkit": {}}, core={"auth": {"password_hash": "interactive"}}).start()
    pat = Account(srv, "pat")
    body = problem(pat.call("POST", "/api/v1/verification/start"), 502, "mail_failed")
    assert "could not be written" in body["detail"] and "not-a-dir" in body["detail"], body
    assert pat.call("GET", "/api/v1/verification/status").json()["pending"] is False
    assert srv.http("GET", "/healthz").status == 200
    assert srv.stop() == 0


def test_bad_transport_refused(server_factory):
    srv = server_factory(plugins={"verification": {
        "path": os.path.join(PLUGIN_DIR, "verification.so"),
        "config": {"transport": "pigeon", "from": "no-reply@onair.test"}}})
    srv.start(wait=False)
    assert srv.wait_log(r"verification\.yaml:\d+:\d+: transport: 'pigeon' is not one of smtp, "
                        r"log, maildir", 15), srv.log()
