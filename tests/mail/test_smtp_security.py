"""STARTTLS, implicit TLS and AUTH against a real aiosmtpd server with a certificate of a test CA:
the message arrives over an encrypted, logged-in session, and every way of getting this wrong ends
in an error that says what to change, never in mail sent in the clear or marked failed."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from conftest import SmtpHandler, free_port
from syndicate.config import parse_smtp_url
from syndicate.errors import ConnectionLost
from syndicate.mail.smtp import SmtpTransport
from syndicate.mail.transport import Outgoing

USER, PASSWORD = "news@example.com", "p@ss:w/rd ü"
# aiosmtpd can't tell that a session under implicit TLS is encrypted, and warns about AUTH without it.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@dataclass
class Server(SmtpHandler):
    sessions: list[dict] = field(default_factory=list)  # per message: was the session encrypted, who logged in

    async def handle_DATA(self, server, session, envelope):
        encrypted = server.transport.get_extra_info("ssl_object") is not None or session.ssl is not None
        self.sessions.append(dict(tls=encrypted, login=session.auth_data and session.auth_data.login))
        return await super().handle_DATA(server, session, envelope)


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def trusted(ca, tmp_path, monkeypatch):
    """The test CA is what this process trusts, as an operator's SSL_CERT_FILE would make it."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))


def serve(ca, *, implicit_tls: bool = False, offer_starttls: bool = True, **smtp_parameters):
    """An aiosmtpd server whose certificate the test CA signed for 127.0.0.1; the handler has `.port`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    handler, port = Server(), free_port()
    if implicit_tls:
        controller = Controller(handler, hostname="127.0.0.1", port=port, ssl_context=context,
                                server_hostname="127.0.0.1", **smtp_parameters)
    else:
        controller = Controller(handler, hostname="127.0.0.1", port=port,
                                tls_context=context if offer_starttls else None, **smtp_parameters)
    controller.start()
    handler.port = port
    return controller, handler


@pytest.fixture
def servers(ca):
    started = []

    def start(**options):
        controller, handler = serve(ca, **options)
        started.append(controller)
        return handler
    yield start
    for controller in started:
        controller.stop()


def send(url: str, to: str = "reader@example.org") -> str:
    transport = SmtpTransport(parse_smtp_url(url))
    try:
        with transport.connect() as connection:
            data = f"From: {USER}\r\nTo: {to}\r\nSubject: hi\r\n\r\nhello\r\n".encode()
            return connection.send(Outgoing(USER, to, data, "<1@example.com>"))
    finally:
        transport.close()


CREDENTIALS = "news%40example.com:p%40ss%3Aw%2Frd%20%C3%BC"


def test_starttls_then_auth_delivers_over_an_encrypted_logged_in_session(servers, trusted):
    server = servers(require_starttls=True, auth_required=True, authenticator=authenticator)

    reply = send(f"smtp+starttls://{CREDENTIALS}@127.0.0.1:{server.port}")

    assert reply.startswith("250")
    assert [m.recipients for m in server.messages] == [["reader@example.org"]]
    assert server.sessions == [dict(tls=True, login=USER.encode())]


def test_implicit_tls_with_auth_delivers(servers, trusted):
    server = servers(implicit_tls=True, auth_required=True, auth_require_tls=False, authenticator=authenticator)

    assert send(f"smtps://{CREDENTIALS}@127.0.0.1:{server.port}").startswith("250")
    assert server.sessions == [dict(tls=True, login=USER.encode())]


def test_a_wrong_password_is_a_lost_connection_that_names_the_setting(servers, trusted):
    server = servers(require_starttls=True, auth_required=True, authenticator=authenticator)

    with pytest.raises(ConnectionLost, match="refused our login.*SYNDICATE_SMTP_URL"):
        send(f"smtp+starttls://news%40example.com:wrong@127.0.0.1:{server.port}")
    assert server.messages == []


def test_a_certificate_this_machine_does_not_trust_is_refused_with_what_to_do(servers, tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-bundle.pem"))  # the test CA is not trusted
    server = servers(require_starttls=True, auth_required=True, authenticator=authenticator)

    with pytest.raises(ConnectionLost, match="certificate.*SSL_CERT_FILE") as refused:
        send(f"smtp+starttls://{CREDENTIALS}@127.0.0.1:{server.port}")
    assert refused.value.code is None  # no reply from the server: the stream is retried later, as any lost one
    assert server.messages == []


def test_starttls_asked_of_a_server_that_does_not_offer_it_sends_nothing_in_the_clear(servers, trusted):
    server = servers(offer_starttls=False, auth_require_tls=False, authenticator=authenticator)

    with pytest.raises(ConnectionLost, match="does not offer STARTTLS.*smtps://"):
        send(f"smtp+starttls://{CREDENTIALS}@127.0.0.1:{server.port}")
    assert server.messages == [] and server.sessions == []


@pytest.mark.parametrize("url", ["smtp://127.0.0.1:{port}", "smtp+starttls://127.0.0.1:{port}"],
                         ids=["plain", "starttls-without-login"])
def test_a_server_that_wants_more_than_it_was_given_defers_the_stream_and_says_why(servers, trusted, url):
    """A 530 at MAIL ("authentication required", "must issue STARTTLS first") is about the session,
    not this message or this reader: it must defer the batch for a later try, not fail every reader."""
    server = servers(require_starttls=True, auth_required=True, authenticator=authenticator)

    with pytest.raises(ConnectionLost, match="530") as refused:
        send(url.format(port=server.port))
    assert refused.value.code == 530
    assert "SYNDICATE_SMTP_URL" in str(refused.value)
    assert server.messages == []


def test_the_server_tells_an_encrypted_session_from_a_plain_one(servers):
    """The control for the checks above: over smtp:// the same server sees no TLS and no login."""
    server = servers(offer_starttls=False, auth_require_tls=False)

    assert send(f"smtp://127.0.0.1:{server.port}").startswith("250")
    assert server.sessions == [dict(tls=False, login=None)]


@pytest.mark.parametrize("scheme, options", [
    ("smtp", {}), ("smtp+starttls", {"require_starttls": True}), ("smtps", {"implicit_tls": True}),
])
def test_every_connection_plain_or_tls_sends_each_write_at_once(servers, trusted, scheme, options):
    """TCP_NODELAY on the socket, set before STARTTLS or the implicit TLS handshake: `ssl` writes through the
    same file descriptor, so a TLS record's last partial segment doesn't wait for the server's delayed ACK."""
    server = servers(**options)
    transport = SmtpTransport(parse_smtp_url(f"{scheme}://127.0.0.1:{server.port}"))
    try:
        with transport.connect() as connection:
            sock = connection.smtp.sock
            assert isinstance(sock, ssl.SSLSocket) == (scheme != "smtp")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            body = ("x" * 70 + "\r\n") * 70  # 5 KB: a breaking alert's size, where segments don't fill
            data = f"From: {USER}\r\nTo: r@example.org\r\nSubject: hi\r\n\r\n{body}".encode()
            assert connection.send(Outgoing(USER, "r@example.org", data, "<1@example.com>")).startswith("250")
    finally:
        transport.close()
    assert len(server.messages) == 1
