"""Fake X, Mastodon and Bluesky on 127.0.0.1 that real worker processes post to, with faults on demand.

Each network is a small HTTP server answering the calls syndicate's clients make (tweepy, Mastodon.py,
atproto) the way the network does — ids, URIs, headers, error bodies — keeping every post it takes, and
misbehaving for a while when told to:

    peers = SocialPeers(tmp / "peers")
    peers.start()
    env = {**os.environ, **peers.worker_env}        # for the worker processes
    # a Mastodon account's instance is peers.mastodon_url, a Bluesky account's service peers.bluesky_url
    peers.fault("mastodon", "503", 30)               # every post there fails for the next 30 s
    ...
    peers.posts("mastodon"), peers.faults_answered()
    peers.stop()

Faults, on the post itself only (POST /2/tweets, POST /api/v1/statuses, com.atproto.repo.createRecord;
logins, reads and blob uploads always work):
    "429"             the network's rate-limit answer, its reset header RESET_AHEAD seconds ahead
    "503"             a server error; nothing stored
    "timeout"         no answer at all for HOLD_SECONDS (longer than social.clients.base.TIMEOUT); nothing stored
    "taken-then-502"  the post is stored, then a gateway's 502 page is the answer
    "taken-then-timeout"  the post is stored, then no answer at all for HOLD_SECONDS (a worker killed while it
                      waits, or one that times out, never hears it went out)

X's host is hard-coded in tweepy (https://api.twitter.com), so X sits behind an HTTPS proxy: it accepts
CONNECT api.twitter.com:443 only, answers 200 and ends the TLS itself with a certificate from a local CA
(trustme), then serves the X API inside the tunnel. `worker_env` points requests at the proxy
(HTTPS_PROXY) and at the CA (REQUESTS_CA_BUNDLE); NO_PROXY keeps 127.0.0.1 direct, for httpx too.
SSL_CERT_FILE is left alone: httpx reads it, and it would replace every CA httpx trusts.

As the networks do: X refuses the same text twice from one account (403 duplicate content); Mastodon
answers a known Idempotency-Key (per token, for an hour) with the first status and stores nothing; the
Bluesky PDS answers an existing record key with the reference PDS's bare 500 and serves getRecord, so a
client can look for what got through. Unlike them: rate-limit headers on ordinary answers count requests
per account but never refuse (the only 429s are injected ones); passwords and OAuth signatures are not
checked; Bluesky's tokens are real HS256 JWTs with an expiry, checked.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import html
import json
import re
import secrets
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import trustme

from syndicate.social.clients.base import TIMEOUT as CLIENT_TIMEOUT

NETWORKS = ("x", "mastodon", "bluesky")
KINDS = ("429", "503", "timeout", "taken-then-502", "taken-then-timeout")
X_HOST = "api.twitter.com"
HOLD_SECONDS = CLIENT_TIMEOUT + 10  # a "timeout" request is held this long, then dropped unanswered
RESET_AHEAD = 5  # seconds: when an injected 429 says the limit resets
IDLE_SECONDS = 120  # an idle keep-alive connection is closed after this


# ── what every network shares: faults and the record ─────────────────────────


class Chaos:
    """The faults in force, how many requests each answered, and the posts each network took."""

    def __init__(self):
        self.lock = threading.Lock()
        self.stopping = threading.Event()  # releases held requests at stop()
        self._faults: dict[str, tuple[str, float]] = {}  # network → (kind, until, monotonic)
        self._answered: collections.Counter = collections.Counter()
        self._posts: dict[str, list[dict]] = {network: [] for network in NETWORKS}

    def set_fault(self, network: str, kind: str | None, seconds: float) -> None:
        if network not in NETWORKS:
            raise ValueError(f"network {network!r} is not one of {', '.join(NETWORKS)}")
        if kind is not None and kind not in KINDS:
            raise ValueError(f"fault {kind!r} is not one of {', '.join(KINDS)} (or None to clear)")
        with self.lock:
            if kind is None:
                self._faults.pop(network, None)
            else:
                self._faults[network] = (kind, time.monotonic() + seconds)

    def fault_now(self, network: str) -> str | None:
        """The fault this request gets, if one is in force; counted as answered."""
        with self.lock:
            kind, until = self._faults.get(network, (None, 0.0))
            if kind is None or time.monotonic() >= until:
                return None
            self._answered[(network, kind)] += 1
            return kind

    def record(self, network: str, *, text: str, key: str | None, account: str | None, remote_id: str) -> None:
        with self.lock:
            self._posts[network].append(
                {"text": text, "key": key, "at": time.time(), "account": account, "id": remote_id})

    def posts(self, network: str) -> list[dict]:
        with self.lock:
            return [dict(post) for post in self._posts[network]]

    def answered(self) -> collections.Counter:
        with self.lock:
            return collections.Counter(self._answered)


class RateWindow:
    """Requests per account in fixed windows: what an ordinary answer's rate-limit headers say. Never refuses."""

    def __init__(self, limit: int, seconds: int):
        self.limit, self.seconds = limit, seconds
        self._lock = threading.Lock()
        self._used: dict[str, tuple[float, int]] = {}  # account → (window start, requests)

    def take(self, account: str) -> tuple[int, int, float]:
        """(limit, remaining, reset as epoch seconds) after this request."""
        now = time.time()
        start = now - now % self.seconds
        with self._lock:
            began, used = self._used.get(account, (start, 0))
            used = used + 1 if began == start else 1
            self._used[account] = (start, used)
        return self.limit, max(self.limit - used, 0), start + self.seconds


class Ids:
    """Increasing numeric ids shaped like the network's snowflakes: milliseconds since `epoch_ms`, shifted."""

    def __init__(self, epoch_ms: int, shift: int):
        self.epoch_ms, self.shift = epoch_ms, shift
        self._lock, self._last = threading.Lock(), 0

    def next(self) -> str:
        with self._lock:
            self._last = max((int(time.time() * 1000) - self.epoch_ms) << self.shift, self._last + 1)
            return str(self._last)


def tid() -> str:
    """An atproto timestamp id (record key, repo rev) for now."""
    number = (time.time_ns() // 1000) << 10 | secrets.randbelow(1024)
    return "".join("234567abcdefghijklmnopqrstuvwxyz"[(number >> shift) & 31] for shift in range(60, -1, -5))


def cid(data: bytes, codec: int) -> str:
    """A CIDv1 (sha-256, base32): codec 0x55 raw for blobs ("bafkrei…"), 0x71 dag-cbor for records ("bafyrei…")."""
    digest = bytes([0x01, codec, 0x12, 0x20]) + hashlib.sha256(data).digest()
    return "b" + base64.b32encode(digest).decode().lower().rstrip("=")


def iso(epoch: float, places: int = 3) -> str:
    """'2030-01-02T03:04:05.678Z'"""
    stamp = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return stamp[: len(stamp) - 6 + places] + "Z"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# ── one HTTP exchange ────────────────────────────────────────────────────────


@dataclass
class Request:
    method: str
    path: str  # without the query
    query: dict[str, str]
    headers: Message
    body: bytes

    def json(self) -> dict:
        try:
            data = json.loads(self.body or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def form(self) -> dict:
        if "json" in self.headers.get("Content-Type", ""):
            return self.json()
        return {k: v[-1] for k, v in parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True).items()}

    @property
    def bearer(self) -> str | None:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_answer(status: int, data, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, json.dumps(data).encode(), {"Content-Type": "application/json; charset=utf-8",
                                                      **(headers or {})})


HOLD = Answer(0)  # no answer: hold the request until the client gives up
GATEWAY_502 = Answer(502, b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
                     b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n",
                     {"Content-Type": "text/html"})


class Peer:
    """One fake network: turns a Request into an Answer. Subclasses hold its state behind `self.lock`."""

    network = ""

    def __init__(self, chaos: Chaos):
        self.chaos = chaos
        self.lock = threading.Lock()
        self.url = ""  # set once its server is listening

    def answer(self, request: Request) -> Answer:
        raise NotImplementedError

    def write(self, post: Callable[[], Answer]) -> Answer:
        """The post, under whatever fault is in force."""
        kind = self.chaos.fault_now(self.network)
        if kind is None:
            return post()
        if kind == "429":
            return self.rate_limited(time.time() + RESET_AHEAD)
        if kind == "503":
            return self.unavailable()
        if kind == "timeout":
            return HOLD
        post()  # taken-then-…: the network stores it; the answer is lost on the way back
        return HOLD if kind == "taken-then-timeout" else GATEWAY_502

    def rate_limited(self, reset: float) -> Answer:
        raise NotImplementedError

    def unavailable(self) -> Answer:
        raise NotImplementedError


class ApiHandler(BaseHTTPRequestHandler):
    """Reads a request, asks the server's peer for the answer, writes it (HTTP/1.1, keep-alive)."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_SECONDS

    def do_GET(self):
        peer: Peer = self.server.peer
        if peer.chaos.stopping.is_set():  # stopped: a kept-alive connection gets nothing more
            self.close_connection = True
            return
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        answer = peer.answer(Request(self.command, url.path, query, self.headers, self._body()))
        if answer is HOLD:
            peer.chaos.stopping.wait(HOLD_SECONDS)
            self.close_connection = True  # dropped, never answered
            return
        self.send_response(answer.status)  # with Date, which Mastodon.py reads against X-RateLimit-Reset
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, format, *args):
        pass


class TunnelHandler(BaseHTTPRequestHandler):
    """An HTTPS proxy that reaches one host, itself: CONNECT api.twitter.com:443 → 200, then TLS as
    api.twitter.com (the local CA's certificate) and the fake X API inside the tunnel."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_SECONDS

    def do_CONNECT(self):
        host, _, port = self.path.rpartition(":")
        if (host.lower(), port) != (X_HOST, "443"):
            self.send_error(403, f"this proxy reaches {X_HOST}:443 only")
            self.close_connection = True
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.close_connection = True  # whatever happens inside, the tunnel ends with it
        try:
            with self.server.tls.wrap_socket(self.connection, server_side=True) as tls:
                ApiHandler(tls, self.client_address, self.server)  # serves requests until the client leaves
        except OSError:  # a failed handshake, a client that hung up mid-request
            pass

    def log_message(self, format, *args):
        pass


class PeerServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many workers connecting at once: socketserver's default backlog is 5

    def __init__(self, peer: Peer, handler=ApiHandler, tls: ssl.SSLContext | None = None):
        super().__init__(("127.0.0.1", 0), handler)
        self.peer, self.tls = peer, tls

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], OSError):  # a client that gave up or hung up: no news
            return
        super().handle_error(request, client_address)


# ── X ────────────────────────────────────────────────────────────────────────


class FakeX(Peer):
    """API v2: POST /2/tweets and GET /2/users/me, the account being the OAuth 1.0a access token (or the
    OAuth 2.0 bearer token)."""

    network = "x"
    DUPLICATE = {"detail": "You are not allowed to create a Tweet with duplicate content.", "status": 403,
                 "title": "Forbidden", "type": "about:blank"}

    def __init__(self, chaos: Chaos):
        super().__init__(chaos)
        self.ids = Ids(epoch_ms=1288834974657, shift=22)  # X's snowflake epoch
        self.window = RateWindow(10_000, 15 * 60)
        self._texts: set[tuple[str, str]] = set()  # (account, text): X refuses a duplicate

    def answer(self, request: Request) -> Answer:
        route = (request.method, request.path.rstrip("/"))
        if route == ("POST", "/2/tweets"):
            return self.write(lambda: self._authorized(request, self._tweet))
        if route == ("GET", "/2/users/me"):
            return self._authorized(request, self._me)
        return self._problem(404, "Not Found Error", f"The requested resource {request.path} was not found",
                             "https://api.twitter.com/2/problems/resource-not-found")

    def _authorized(self, request: Request, then: Callable[[Request, str], Answer]) -> Answer:
        authorization = request.headers.get("Authorization", "")
        token = re.search(r'oauth_token="([^"]*)"', authorization) if authorization.startswith("OAuth ") else None
        account = unquote(token.group(1)) if token else request.bearer
        if not account:
            return self._problem(401, "Unauthorized", "Unauthorized", "about:blank")
        return then(request, account)

    def _tweet(self, request: Request, account: str) -> Answer:
        text = request.json().get("text")
        if not isinstance(text, str) or not text.strip():
            return self._problem(400, "Invalid Request", "One or more parameters to your request was invalid.",
                                 "https://api.twitter.com/2/problems/invalid-request")
        with self.lock:
            if (account, text) in self._texts:
                return json_answer(403, self.DUPLICATE, self._limits(account))
            self._texts.add((account, text))
            tweet_id = self.ids.next()
            self.chaos.record("x", text=text, key=None, account=account, remote_id=tweet_id)
        return json_answer(201, {"data": {"id": tweet_id, "text": text, "edit_history_tweet_ids": [tweet_id]}},
                           self._limits(account))

    def _me(self, request: Request, account: str) -> Answer:
        # A real access token starts with the user's id: "1234567-abc…".
        user_id = account.split("-")[0] if re.match(r"\d+-", account) else \
            str(int(hashlib.sha256(account.encode()).hexdigest()[:15], 16))
        username = re.sub(r"\W", "", account.split("-")[-1])[:15] or "newsroom"
        return json_answer(200, {"data": {"id": user_id, "name": username.title(), "username": username}},
                           self._limits(account))

    def _limits(self, account: str) -> dict[str, str]:
        limit, remaining, reset = self.window.take(account)
        return {"x-rate-limit-limit": str(limit), "x-rate-limit-remaining": str(remaining),
                "x-rate-limit-reset": str(int(reset))}

    def rate_limited(self, reset: float) -> Answer:
        return self._problem(429, "Too Many Requests", "Too Many Requests", "about:blank", {
            "x-rate-limit-limit": str(self.window.limit), "x-rate-limit-remaining": "0",
            "x-rate-limit-reset": str(int(reset) + 1)})  # whole seconds, rounded up: never before `reset`

    def unavailable(self) -> Answer:
        return self._problem(503, "Service Unavailable", "Service Unavailable", "about:blank")

    @staticmethod
    def _problem(status: int, title: str, detail: str, kind: str, headers: dict | None = None) -> Answer:
        return json_answer(status, {"title": title, "detail": detail, "type": kind, "status": status}, headers)


# ── Mastodon ─────────────────────────────────────────────────────────────────


class FakeMastodon(Peer):
    """An instance: verify_credentials, /api/v{1,2}/instance, POST /api/v1/statuses with Idempotency-Key,
    GET /api/v1/statuses/:id. The account is the bearer token."""

    network = "mastodon"
    KEYS_KEPT = 3600  # seconds Mastodon remembers an Idempotency-Key

    def __init__(self, chaos: Chaos):
        super().__init__(chaos)
        self.ids = Ids(epoch_ms=0, shift=16)  # Mastodon's ids: milliseconds << 16
        self.window = RateWindow(300, 5 * 60)  # Mastodon's default: 300 requests per 5 minutes per account
        self._statuses: dict[str, dict] = {}
        self._keys: dict[tuple[str, str], tuple[dict, float]] = {}  # (token, key) → (status, monotonic)

    def answer(self, request: Request) -> Answer:
        path = request.path.rstrip("/")  # Mastodon.py asks for /api/v2/instance/
        if request.method == "GET" and path == "/api/v2/instance":
            return json_answer(200, self._instance_v2())
        if request.method == "GET" and path == "/api/v1/instance":
            return json_answer(200, self._instance_v1())
        token = request.bearer
        if token is None:
            return json_answer(401, {"error": "The access token is invalid"})
        if request.method == "POST" and path == "/api/v1/statuses":
            return self.write(lambda: self._post(request, token))
        if request.method == "GET" and path == "/api/v1/accounts/verify_credentials":
            return json_answer(200, self._account(token), self._limits(token))
        found = re.fullmatch(r"/api/v1/statuses/(\d+)", path)
        if request.method == "GET" and found and found.group(1) in self._statuses:
            return json_answer(200, self._statuses[found.group(1)], self._limits(token))
        return json_answer(404, {"error": "Record not found"})

    def _post(self, request: Request, token: str) -> Answer:
        form = request.form()
        text = str(form.get("status") or "")
        if not text.strip():
            return json_answer(422, {"error": "Validation failed: Text can't be blank"}, self._limits(token))
        key = request.headers.get("Idempotency-Key")
        with self.lock:
            now = time.monotonic()
            self._keys = {k: v for k, v in self._keys.items() if now - v[1] < self.KEYS_KEPT}
            if key and (token, key) in self._keys:
                return json_answer(200, self._keys[(token, key)][0], self._limits(token))
            status = self._status(token, text, form)
            self._statuses[status["id"]] = status
            if key:
                self._keys[(token, key)] = (status, now)
            self.chaos.record("mastodon", text=text, key=key, account=token, remote_id=status["id"])
        return json_answer(200, status, self._limits(token))

    def _status(self, token: str, text: str, form: dict) -> dict:
        account, status_id = self._account(token), self.ids.next()
        paragraphs = "".join(f"<p>{html.escape(p).replace(chr(10), '<br />')}</p>" for p in text.split("\n\n"))
        return {
            "id": status_id, "created_at": iso(time.time()), "in_reply_to_id": None, "in_reply_to_account_id": None,
            "sensitive": form.get("sensitive") in ("1", "true", True), "spoiler_text": form.get("spoiler_text", ""),
            "visibility": form.get("visibility", "public"), "language": form.get("language") or None,
            "uri": f"{self.url}/users/{account['username']}/statuses/{status_id}",
            "url": f"{self.url}/@{account['username']}/{status_id}",
            "replies_count": 0, "reblogs_count": 0, "favourites_count": 0, "edited_at": None,
            "content": paragraphs, "reblog": None, "application": {"name": "syndicate", "website": None},
            "account": account, "media_attachments": [], "mentions": [], "tags": [], "emojis": [],
            "card": None, "poll": None,
        }

    def _account(self, token: str) -> dict:
        username = re.sub(r"\W", "", token)[:30] or "newsroom"
        number = str(int(hashlib.sha256(token.encode()).hexdigest()[:12], 16))
        return {"id": number, "username": username, "acct": username, "display_name": username.title(),
                "locked": False, "bot": True, "group": False, "created_at": "2024-01-01T00:00:00.000Z",
                "note": "", "url": f"{self.url}/@{username}", "avatar": f"{self.url}/avatars/original/missing.png",
                "header": f"{self.url}/headers/original/missing.png", "followers_count": 0,
                "following_count": 0, "statuses_count": 0, "fields": [], "emojis": []}

    def _instance_v2(self) -> dict:
        host = urlsplit(self.url).netloc
        return {"domain": host, "title": "Fake Mastodon", "version": "4.3.0", "source_url": "",
                "description": "A local instance for soak runs", "languages": ["en"],
                "configuration": {"urls": {}, "statuses": {"max_characters": 500, "max_media_attachments": 4,
                                                           "characters_reserved_per_url": 23}},
                "registrations": {"enabled": False, "approval_required": False, "message": None}, "rules": []}

    def _instance_v1(self) -> dict:
        v2 = self._instance_v2()
        return {"uri": v2["domain"], "title": v2["title"], "version": v2["version"],
                "configuration": v2["configuration"], "languages": v2["languages"]}

    def _limits(self, token: str) -> dict[str, str]:
        limit, remaining, reset = self.window.take(token)
        return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": iso(reset, 6)}

    def rate_limited(self, reset: float) -> Answer:
        return json_answer(429, {"error": "Too many requests"}, {
            "X-RateLimit-Limit": str(self.window.limit), "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": iso(reset, 6)})

    def unavailable(self) -> Answer:
        return json_answer(503, {"error": "Service Unavailable"})


# ── Bluesky ──────────────────────────────────────────────────────────────────


class FakeBluesky(Peer):
    """A PDS: sessions (create, refresh, get), uploadBlob, createRecord, getRecord, and getProfile as the
    AppView would answer it. A handle's DID is derived from the handle; the account is the handle."""

    network = "bluesky"
    ACCESS_LIFETIME, REFRESH_LIFETIME = 2 * 3600, 90 * 86400

    def __init__(self, chaos: Chaos):
        super().__init__(chaos)
        self.window = RateWindow(5000, 3600)  # the PDS's write budget per account
        self._secret = secrets.token_bytes(32)  # signs this run's tokens: an older run's are refused
        self._handles: dict[str, str] = {}  # did → handle
        self._records: dict[str, dict] = {}  # AT URI → {"uri", "cid", "value"}
        self._blobs: dict[str, set[str]] = collections.defaultdict(set)  # did → uploaded blob CIDs
        self._routes = {
            ("POST", "com.atproto.server.createSession"): self._create_session,
            ("POST", "com.atproto.server.refreshSession"): self._refresh_session,
            ("GET", "com.atproto.server.getSession"): self._get_session,
            ("GET", "com.atproto.server.describeServer"): self._describe_server,
            ("POST", "com.atproto.repo.uploadBlob"): self._upload_blob,
            ("POST", "com.atproto.repo.createRecord"): lambda request: self.write(lambda: self._create_record(request)),
            ("GET", "com.atproto.repo.getRecord"): self._get_record,
            ("GET", "app.bsky.actor.getProfile"): self._get_profile,
            ("GET", "_health"): lambda request: json_answer(200, {"version": "0.4.0"}),
        }

    def answer(self, request: Request) -> Answer:
        method = request.path.removeprefix("/xrpc/")
        route = self._routes.get((request.method, method))
        if not request.path.startswith("/xrpc/") or route is None:
            return self._error(501, "MethodNotImplemented", "Method Not Implemented")
        return route(request)

    # Sessions: HS256 JWTs, as a PDS signs them, with the scopes and lifetimes of an app-password session.

    def _create_session(self, request: Request) -> Answer:
        body = request.json()
        identifier, password = str(body.get("identifier") or "").lower(), body.get("password")
        if not identifier or not password:
            return self._error(400, "InvalidRequest", "Input must have the properties identifier and password")
        handle = self._handles.get(identifier, identifier)  # a DID logs in as its handle
        return json_answer(200, self._session(self._did_of(handle), handle))

    def _refresh_session(self, request: Request) -> Answer:
        did = self._authenticate(request, "com.atproto.refresh")
        return did if isinstance(did, Answer) else json_answer(200, self._session(did, self._handles[did]))

    def _get_session(self, request: Request) -> Answer:
        did = self._authenticate(request)
        if isinstance(did, Answer):
            return did
        return json_answer(200, {"handle": self._handles[did], "did": did, "active": True, "emailConfirmed": True,
                                 "didDoc": self._did_doc(did)})

    def _session(self, did: str, handle: str) -> dict:
        return {"did": did, "handle": handle, "didDoc": self._did_doc(did), "active": True,
                "email": f"{handle}@example.invalid", "emailConfirmed": True, "emailAuthFactor": False,
                "accessJwt": self._jwt(did, "com.atproto.appPass", self.ACCESS_LIFETIME),
                "refreshJwt": self._jwt(did, "com.atproto.refresh", self.REFRESH_LIFETIME)}

    def _did_of(self, handle: str) -> str:
        did = "did:plc:" + base64.b32encode(hashlib.sha256(handle.encode()).digest()).decode().lower()[:24]
        with self.lock:
            self._handles[did] = handle
        return did

    def _did_doc(self, did: str) -> dict:
        return {"@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
                "id": did, "alsoKnownAs": [f"at://{self._handles[did]}"],
                "verificationMethod": [{"id": f"{did}#atproto", "type": "Multikey", "controller": did,
                                        "publicKeyMultibase": "zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF"}],
                "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": self.url}]}

    def _jwt(self, did: str, scope: str, lifetime: int) -> str:
        now = int(time.time())
        claims = {"scope": scope, "sub": did, "aud": f"did:web:{urlsplit(self.url).hostname}", "iat": now,
                  "exp": now + lifetime, "jti": secrets.token_urlsafe(16)}
        header = {"typ": "refresh+jwt" if scope == "com.atproto.refresh" else "at+jwt", "alg": "HS256"}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        return f"{signing_input}.{b64url(hmac.digest(self._secret, signing_input.encode(), 'sha256'))}"

    def _authenticate(self, request: Request, scope: str = "com.atproto.appPass") -> str | Answer:
        """The session's DID, or the PDS's refusal of the token."""
        token = request.bearer
        if token is None:
            return self._error(401, "AuthenticationRequired", "Authentication Required")
        signing_input, _, signature = token.rpartition(".")
        expected = b64url(hmac.digest(self._secret, signing_input.encode(), "sha256"))
        if not hmac.compare_digest(signature, expected):
            return self._error(400, "InvalidToken", "Token could not be verified")
        claims = json.loads(base64.urlsafe_b64decode(signing_input.split(".")[1] + "=="))
        if claims["scope"] != scope:
            return self._error(400, "InvalidToken", "Bad token scope")
        if claims["exp"] <= time.time():
            return self._error(400, "ExpiredToken", "Token has expired")
        return claims["sub"]

    # The repo.

    def _upload_blob(self, request: Request) -> Answer:
        did = self._authenticate(request)
        if isinstance(did, Answer):
            return did
        if not request.body:
            return self._error(400, "InvalidRequest", "Request has no body")
        blob = cid(request.body, 0x55)
        with self.lock:
            self._blobs[did].add(blob)
        mime = request.headers.get("Content-Type") or "application/octet-stream"
        return json_answer(200, {"blob": {"$type": "blob", "ref": {"$link": blob}, "mimeType": mime,
                                          "size": len(request.body)}}, self._limits(did))

    def _create_record(self, request: Request) -> Answer:
        did = self._authenticate(request)
        if isinstance(did, Answer):
            return did
        body = request.json()
        collection, record, rkey = body.get("collection"), body.get("record"), body.get("rkey") or tid()
        if body.get("repo") not in (did, self._handles[did]):
            return self._error(401, "AuthenticationRequired", "Input/repo must be the DID of the session")
        if not isinstance(record, dict) or record.get("$type") != collection or collection != "app.bsky.feed.post" \
                or not isinstance(record.get("text"), str) or "createdAt" not in record:
            return self._error(400, "InvalidRequest", f"Invalid {collection} record")
        thumb = ((record.get("embed") or {}).get("external") or {}).get("thumb")
        uri = f"at://{did}/{collection}/{rkey}"
        with self.lock:
            if thumb and thumb.get("ref", {}).get("$link") not in self._blobs[did]:
                return self._error(400, "BlobNotFound", f"Could not find blob: {thumb.get('ref')}")
            if uri in self._records:  # the reference PDS's answer to an existing rkey (atproto#3718)
                return self._error(500, "InternalServerError", "Internal Server Error")
            record_cid = cid(json.dumps(record, sort_keys=True).encode(), 0x71)
            self._records[uri] = {"uri": uri, "cid": record_cid, "value": record}
            self.chaos.record("bluesky", text=record["text"], key=rkey, account=self._handles[did], remote_id=uri)
        return json_answer(200, {"uri": uri, "cid": record_cid, "validationStatus": "valid",
                                 "commit": {"cid": cid(uri.encode(), 0x71), "rev": tid()}}, self._limits(did))

    def _get_record(self, request: Request) -> Answer:
        did = self._did_for(request.query.get("repo", ""))
        uri = f"at://{did}/{request.query.get('collection')}/{request.query.get('rkey')}"
        with self.lock:
            found = self._records.get(uri)
        if found is None:
            return self._error(400, "RecordNotFound", f"Could not locate record: {uri}")
        return json_answer(200, found)

    def _get_profile(self, request: Request) -> Answer:
        did = self._did_for(request.query.get("actor", ""))
        if did is None:
            return self._error(400, "InvalidRequest", "Profile not found")
        with self.lock:
            posts = sum(uri.startswith(f"at://{did}/app.bsky.feed.post/") for uri in self._records)
        return json_answer(200, {"did": did, "handle": self._handles[did], "displayName": self._handles[did],
                                 "followersCount": 0, "followsCount": 0, "postsCount": posts,
                                 "indexedAt": iso(time.time()), "createdAt": "2024-01-01T00:00:00.000Z"})

    def _did_for(self, actor: str) -> str | None:
        """The DID of a DID or handle this PDS knows."""
        with self.lock:
            if actor in self._handles:
                return actor
            return next((did for did, handle in self._handles.items() if handle == actor.lower()), None)

    def _describe_server(self, request: Request) -> Answer:
        return json_answer(200, {"did": f"did:web:{urlsplit(self.url).hostname}", "inviteCodeRequired": False,
                                 "availableUserDomains": [".bsky.social"], "links": {}})

    # Answers.

    def _limits(self, did: str) -> dict[str, str]:
        limit, remaining, reset = self.window.take(did)
        return {"ratelimit-limit": str(limit), "ratelimit-remaining": str(remaining),
                "ratelimit-reset": str(int(reset)), "ratelimit-policy": f"{limit};w={self.window.seconds}"}

    def rate_limited(self, reset: float) -> Answer:
        return self._error(429, "RateLimitExceeded", "Rate Limit Exceeded", {
            "ratelimit-limit": str(self.window.limit), "ratelimit-remaining": "0",
            "ratelimit-reset": str(int(reset) + 1), "ratelimit-policy": f"{self.window.limit};w={self.window.seconds}"})

    def unavailable(self) -> Answer:
        return self._error(503, "ServiceUnavailable", "Service Unavailable")

    @staticmethod
    def _error(status: int, error: str, message: str, headers: dict | None = None) -> Answer:
        return json_answer(status, {"error": error, "message": message}, headers)


# ── the three together ───────────────────────────────────────────────────────


class SocialPeers:
    """The fake networks, their servers, and what worker processes need to reach them."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)  # the local CA (ca.pem) goes here
        self.chaos = Chaos()
        self._x, self._mastodon, self._bluesky = FakeX(self.chaos), FakeMastodon(self.chaos), FakeBluesky(self.chaos)
        self._servers: list[PeerServer] = []

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="syndicate chaos peers")
        ca.cert_pem.write_to_path(str(self.ca_file))
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(X_HOST).configure_cert(tls)
        tls.set_alpn_protocols(["http/1.1"])
        self.chaos.stopping.clear()
        self._servers = [PeerServer(self._x, TunnelHandler, tls), PeerServer(self._mastodon),
                         PeerServer(self._bluesky)]
        self._x.url = f"https://{X_HOST}"
        self._mastodon.url, self._bluesky.url = self._servers[1].url, self._servers[2].url
        for server in self._servers:
            threading.Thread(target=server.serve_forever, name=f"peer-{server.peer.network}", daemon=True).start()

    def stop(self) -> None:
        self.chaos.stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def proxy_url(self) -> str:
        return self._server(0).url

    @property
    def mastodon_url(self) -> str:
        return self._server(1).url

    @property
    def bluesky_url(self) -> str:
        return self._server(2).url

    @property
    def worker_env(self) -> dict[str, str]:
        """requests (tweepy) reaches https://api.twitter.com through the proxy and trusts the local CA;
        127.0.0.1 and localhost stay direct for requests and httpx alike. Both spellings of each variable:
        urllib's lookup, which both libraries use, prefers the lower-case one a parent may have set."""
        direct = "127.0.0.1,localhost"
        return {"HTTPS_PROXY": self.proxy_url, "https_proxy": self.proxy_url, "NO_PROXY": direct, "no_proxy": direct,
                "REQUESTS_CA_BUNDLE": str(self.ca_file)}

    def fault(self, network: str, kind: str | None, seconds: float) -> None:
        """For `seconds` from now, every post on `network` gets `kind` (one of KINDS); None clears it."""
        self.chaos.set_fault(network, kind, seconds)

    def posts(self, network: str) -> list[dict]:
        """Every post the network stored, in order: text, key (idempotency key / record key), at, account, id."""
        return self.chaos.posts(network)

    def faults_answered(self) -> collections.Counter:
        """(network, kind) → requests answered with that fault."""
        return self.chaos.answered()

    def _server(self, index: int) -> PeerServer:
        if not self._servers:
            raise RuntimeError("SocialPeers.start() first")
        return self._servers[index]
