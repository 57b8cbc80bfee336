"""A real SMTP server for integration tests: Debian's python3-aiosmtpd on a free loopback port.

    sink = SmtpSink(username="mailer", password="s3cret").start()
    ... point the server at sink.url ...
    msg = sink.wait_for("alice@example.org")   # an email.message.EmailMessage
    sink.stop()

Or use the `smtp_sink` pytest fixture (no authentication). Every accepted message is kept
with its envelope; wait_for() waits (bounded) for the next message to a recipient that
was not returned before.
"""
import email
import email.policy
import socket
import threading
import time
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

try:
    import pytest
except ImportError:  # usable without pytest too
    pytest = None


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Mail:
    def __init__(self, mail_from, rcpt_tos, data, login):
        self.mail_from = mail_from
        self.rcpt_tos = list(rcpt_tos)
        self.data = data
        self.login = login
        self.message = email.message_from_bytes(data, policy=email.policy.default)

    @property
    def body(self):
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content() if part is not None else ""


class _Handler:
    def __init__(self, sink):
        self.sink = sink

    async def handle_DATA(self, server, session, envelope):
        login = getattr(session.auth_data, "login", None) if session.authenticated else None
        if isinstance(login, bytes):
            login = login.decode("utf-8", "replace")
        mail = Mail(envelope.mail_from, envelope.rcpt_tos, envelope.content, login)
        with self.sink.cond:
            self.sink.messages.append(mail)
            self.sink.cond.notify_all()
        return "250 Message accepted for delivery"


class SmtpSink:
    def __init__(self, username=None, password=None, port=None):
        self.port = port or _free_port()
        self.username = username
        self.password = password
        self.messages = []
        self.cond = threading.Condition()
        self._returned = set()
        self.controller = None

    @property
    def url(self):
        return f"smtp://127.0.0.1:{self.port}"

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (auth_data.login.decode() == self.username and
              auth_data.password.decode() == self.password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    def start(self):
        kw = {}
        if self.username is not None:
            kw = {"authenticator": self._authenticate, "auth_required": True,
                  "auth_require_tls": False}
        warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port,
                                     **kw)
        self.controller.start()
        return self

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def count(self):
        with self.cond:
            return len(self.messages)

    def wait_for(self, rcpt, timeout=15):
        """The next message (not returned before) addressed to rcpt; AssertionError on timeout."""
        deadline = time.time() + timeout
        with self.cond:
            while True:
                for i, m in enumerate(self.messages):
                    if i not in self._returned and rcpt in m.rcpt_tos:
                        self._returned.add(i)
                        return m
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError(f"no mail to {rcpt} within {timeout}s "
                                         f"({len(self.messages)} received)")
                self.cond.wait(left)


if pytest is not None:
    @pytest.fixture
    def smtp_sink():
        sink = SmtpSink().start()
        yield sink
        sink.stop()
