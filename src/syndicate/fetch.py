"""Fetching URLs that users typed: a deadline on the whole exchange, a size cap, and no way inside our network.

The address check runs when each connection is opened — for the first request and
for every redirect — on the very address we connect to, so a DNS answer that
changes between a check and the connection (DNS rebinding) gains nothing.
Used for feeds now, and for link previews later.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpcore
import httpx

from syndicate import USER_AGENT
from syndicate.errors import FeedError, InvalidInput

MAX_REDIRECTS = 5
PRIVATE_HINT = "set SYNDICATE_ALLOW_PRIVATE_FEEDS=1 to allow addresses on this machine or network"


class Refused(FeedError):
    """The address is not one we may fetch from."""


def check_url(url: str) -> str:
    """An absolute http(s) URL, scheme and host lower-cased, fragment dropped."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{url!r} is not a web address we can fetch: give a full http:// or https:// URL")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, ""))


def public_addresses(host: str, port: int) -> list[str]:
    """The host's addresses, if every one of them is on the public internet."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise FeedError(f"cannot resolve {host!r}: {e.strerror}") from e
    addresses = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        mapped = getattr(address, "ipv4_mapped", None)
        if not (mapped or address).is_global:
            raise Refused(f"{host} resolves to {address}, a private or local address; {PRIVATE_HINT}")
        addresses.append(str(address))
    return addresses


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's socket backend, connecting only to public addresses it has checked itself."""

    def __init__(self):
        self.inner = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        last_error = None
        for address in public_addresses(host, port):
            try:
                # TLS still verifies and sends SNI for `host`: httpcore takes those from the URL.
                return self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                last_error = e
        raise last_error or httpcore.ConnectError(f"no address for {host}")

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise Refused("unix sockets are not fetched")

    def sleep(self, seconds):
        self.inner.sleep(seconds)


def client(allow_private: bool, timeout: float, limits: httpx.Limits | None = None) -> httpx.Client:
    transport = httpx.HTTPTransport(retries=0, limits=limits or httpx.Limits())
    if not allow_private:
        # httpx has no public hook for this; httpcore's pool takes any NetworkBackend.
        transport._pool._network_backend = GuardedBackend()
    return httpx.Client(
        transport=transport,
        timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
        follow_redirects=False,
        trust_env=False,  # a proxy from the environment would do the connecting, unchecked
        headers={"User-Agent": USER_AGENT},
    )


@dataclass
class Fetched:
    status: int
    url: str  # where the answer came from, after permanent redirects only
    body: bytes = b""
    headers: httpx.Headers | None = None
    retry_after: datetime | None = None


def get(http: httpx.Client, url: str, *, headers: dict[str, str], deadline: float, max_bytes: int,
        now: datetime) -> Fetched:
    """GET `url`, following up to five redirects; the whole exchange ends by `deadline` (monotonic)."""
    permanent = url
    for _ in range(MAX_REDIRECTS + 1):
        try:
            with http.stream("GET", url, headers=headers, timeout=_remaining(deadline)) as response:
                if response.status_code in (301, 302, 303, 307, 308) and "location" in response.headers:
                    target = check_url(urljoin(url, response.headers["location"]))
                    if response.status_code in (301, 308) and url == permanent:
                        permanent = target
                    url = target
                    continue
                body = _read(response, max_bytes, deadline) if response.status_code == 200 else b""
                return Fetched(response.status_code, permanent, body, response.headers,
                               _retry_after(response.headers.get("retry-after"), now))
        except httpx.TimeoutException as e:
            raise FeedError(f"no complete answer within the deadline ({type(e).__name__})") from e
        except httpx.HTTPError as e:
            raise FeedError(f"cannot fetch: {e}") from e
    raise FeedError(f"more than {MAX_REDIRECTS} redirects")


def _remaining(deadline: float) -> httpx.Timeout:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FeedError("no complete answer within the deadline")
    return httpx.Timeout(left, connect=min(10.0, left))


def _read(response: httpx.Response, limit: int, deadline: float) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_bytes():  # decompressed: a gzip bomb meets the cap too
        size += len(chunk)
        if size > limit:
            raise FeedError(f"the answer is larger than {limit:,} bytes; refusing to read more")
        if time.monotonic() > deadline:  # a server dripping a byte at a time
            raise FeedError("no complete answer within the deadline (the server sends too slowly)")
        chunks.append(chunk)
    return b"".join(chunks)


def _retry_after(value: str | None, now: datetime) -> datetime | None:
    if not value:
        return None
    if value.strip().isdigit():
        return now + timedelta(seconds=int(value))
    try:
        return parsedate_to_datetime(value).astimezone(UTC)
    except (TypeError, ValueError):
        return None
