"""Fetching URLs that users typed: a deadline on the whole exchange, a size cap, and no way inside our network.

The address check runs when each connection is opened — for the first request and
for every redirect — on the very address we connect to, so a DNS answer that
changes between a check and the connection (DNS rebinding) gains nothing.
Used for feeds now, and for link previews later.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import zlib
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
    if _odd_ipv4(parts.hostname):
        raise InvalidInput(f"{parts.hostname!r} in {url!r} is an IPv4 address written in a short, octal or "
                           "hexadecimal form, which programs read differently: write it as four decimal numbers "
                           "(like 192.0.2.10), or give the site's name")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, ""))


# Ranges that reach this machine or its network, or that no public server has, which `is_global` calls
# global on some interpreters (its tables changed in 3.11.10, 3.12.4 and 3.13): named here, never left to it.
_NEVER_PUBLIC = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "192.0.0.0/24", "192.88.99.0/24",  # "this network"; IETF assignments; the 6to4 relay anycast
    "::/96",  # IPv4-compatible IPv6 (deprecated): ::127.0.0.1 is the loopback by another name
    "64:ff9b:1::/48",  # NAT64 for local use (RFC 8215): the translator and what it reaches are the operator's
    "2001::/23",  # IETF protocol assignments, Teredo (2001::/32) among them: a tunnel, not a server
    "2002::/16",  # 6to4 (RFC 7526 deprecated it): any relay, or our own router, unwraps the embedded IPv4
    "2001:db8::/32", "3fff::/20",  # documentation
    "fec0::/10",  # site-local (deprecated), still routed inside some networks
))
# NAT64's well-known prefix (RFC 6052): an IPv6-only host with DNS64 reaches every IPv4-only site through it,
# so it is judged by the IPv4 address in its last 32 bits, as that address itself would be.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `address` is a unicast address of the public internet, on every interpreter."""
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return is_public(address.ipv4_mapped)
        if address in _NAT64:
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF))
    if any(address in network for network in _NEVER_PUBLIC if network.version == address.version):
        return False
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_unspecified
                                      or address.is_loopback or address.is_link_local or address.is_private)


def _odd_ipv4(host: str) -> bool:
    """A host browsers read as an IPv4 address (its last label is a number, as the WHATWG URL standard
    says) that isn't written as four plain decimal numbers: 0177.0.0.1, 2130706433, 0x7f.1, 127.1."""
    labels = host.split(".")
    last = labels[-1] or (labels[-2] if len(labels) > 1 else "")
    numeric = last.isascii() and (last.isdigit() or last.lower().startswith("0x") and
                                  all(c in "0123456789abcdef" for c in last[2:].lower()))
    if not numeric:
        return False
    return not (len(labels) == 4 and all(
        label.isascii() and label.isdigit() and str(int(label)) == label and int(label) <= 255 for label in labels))


def public_addresses(host: str, port: int) -> list[str]:
    """The host's addresses, if every one of them is on the public internet."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise FeedError(f"cannot resolve {host!r}: {e.strerror}") from e
    addresses = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not is_public(address):
            raise Refused(f"{host} resolves to {address}, a private or local address; {PRIVATE_HINT}")
        addresses.append(str(address))
    return addresses


# The deadline of the request this thread is making: every socket read and write is held to it,
# so a server dripping its headers a byte at a time is cut off too, not only a dripping body.
_deadline = threading.local()


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream):
        self.inner = inner

    def _timeout(self, timeout: float | None) -> float | None:
        at = getattr(_deadline, "at", None)
        if at is None:
            return timeout
        left = at - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the deadline for this request has passed")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes, timeout=None):
        return self.inner.read(max_bytes, self._timeout(timeout))

    def write(self, buffer, timeout=None):
        self.inner.write(buffer, self._timeout(timeout))

    def close(self):
        self.inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        return _DeadlineStream(self.inner.start_tls(ssl_context, server_hostname, self._timeout(timeout)))

    def get_extra_info(self, info):
        return self.inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's socket backend, connecting only to public addresses it has checked itself
    (unless private ones are allowed), and holding every read to the request's deadline."""

    def __init__(self, allow_private: bool = False):
        self.inner = httpcore.SyncBackend()
        self.allow_private = allow_private

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        if self.allow_private:
            return _DeadlineStream(self.inner.connect_tcp(host, port, timeout, local_address, socket_options))
        last_error = None
        for address in public_addresses(host, port):
            try:
                # TLS still verifies and sends SNI for `host`: httpcore takes those from the URL.
                stream = self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
                return _DeadlineStream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                last_error = e
        raise last_error or httpcore.ConnectError(f"no address for {host}")

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise Refused("unix sockets are not fetched")

    def sleep(self, seconds):
        self.inner.sleep(seconds)


def client(allow_private: bool, timeout: float, limits: httpx.Limits | None = None) -> httpx.Client:
    transport = httpx.HTTPTransport(retries=0, limits=limits or httpx.Limits())
    # httpx has no public hook for this; httpcore's pool takes any NetworkBackend.
    transport._pool._network_backend = GuardedBackend(allow_private)
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
    final_url: str = ""  # where the answer came from after every redirect (a page's links resolve against it)


def guarded_get(http: httpx.Client, url: str, *, headers: dict[str, str], deadline: float, max_bytes: int,
                now: datetime, max_redirects: int = MAX_REDIRECTS) -> Fetched:
    """GET `url` with the guards every fetch from the web needs: the URL (and each redirect's) checked, the
    body capped at `max_bytes`, up to `max_redirects` redirects, and the whole exchange over by `deadline`
    (monotonic)."""
    permanent = url
    headers = {**headers, "Accept-Encoding": "gzip, deflate"}  # the ones _read can inflate within the cap
    try:
        check_url(url)  # a URL stored before today's rules gets today's reason, not httpx's exception
    except InvalidInput as e:
        raise FeedError(str(e)) from e
    _deadline.at = deadline
    try:
        for _ in range(max_redirects + 1):
            with http.stream("GET", url, headers=headers, timeout=_remaining(deadline)) as response:
                if response.status_code in (301, 302, 303, 307, 308) and "location" in response.headers:
                    try:
                        target = check_url(urljoin(url, response.headers["location"]))
                    except InvalidInput as e:
                        raise FeedError(f"redirected to {response.headers['location']!r}, which we don't "
                                        f"fetch: {e}") from e
                    if response.status_code in (301, 308) and url == permanent:
                        permanent = target
                    url = target
                    continue
                declared = response.headers.get("content-length", "")
                if response.status_code == 200 and declared.isdigit() and int(declared) > max_bytes and \
                        response.headers.get("content-encoding", "identity").strip().lower() == "identity":
                    raise FeedError(f"the answer is {int(declared):,} bytes, larger than {max_bytes:,} bytes; "
                                    "refusing to read it")
                body = _read(response, max_bytes, deadline) if response.status_code == 200 else b""
                return Fetched(response.status_code, permanent, body, response.headers,
                               _retry_after(response.headers.get("retry-after"), now), final_url=url)
    except httpx.TimeoutException as e:
        raise FeedError(f"no complete answer within the deadline ({type(e).__name__})") from e
    except (httpx.HTTPError, httpx.InvalidURL) as e:  # InvalidURL is no HTTPError
        raise FeedError(f"cannot fetch: {e}") from e
    finally:
        _deadline.at = None
    raise FeedError(f"more than {max_redirects} redirects" if max_redirects else
                    f"redirected to {response.headers['location'][:200]!r}; redirects are not followed here")


def _remaining(deadline: float) -> httpx.Timeout:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FeedError("no complete answer within the deadline")
    return httpx.Timeout(left, connect=min(10.0, left))


def _read(response: httpx.Response, limit: int, deadline: float) -> bytes:
    """The body, inflated here rather than by httpx: never more than `limit` bytes in memory,
    however well a gzip bomb compresses."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
        raise FeedError(f"the server answered in an encoding we didn't ask for ({encoding})")
    # wbits 47: a gzip or zlib header, detected; "deflate" without a header is retried raw below.
    inflate = zlib.decompressobj(47) if encoding != "identity" else None
    headerless = False  # some servers send "deflate" as a raw stream, without the zlib header
    chunks, size = [], 0
    for raw in response.iter_raw():
        if time.monotonic() > deadline:  # a server dripping a byte at a time
            raise FeedError("no complete answer within the deadline (the server sends too slowly)")
        pending = raw
        while pending:
            if inflate is None:
                chunk, pending = pending, b""
            else:
                try:
                    chunk = inflate.decompress(pending, limit - size + 1)
                except zlib.error as e:
                    if size or encoding != "deflate" or headerless:
                        raise FeedError(f"the {encoding} body is corrupt: {e}") from e
                    inflate, headerless = zlib.decompressobj(-15), True
                    continue
                pending = inflate.unconsumed_tail
            size += len(chunk)
            if size > limit:
                raise FeedError(f"the answer is larger than {limit:,} bytes; refusing to read more")
            chunks.append(chunk)
    return b"".join(chunks)


MAX_RETRY_AFTER = timedelta(days=7)  # a server asking for more is capped, not obeyed into the next century


def _retry_after(value: str | None, now: datetime) -> datetime | None:
    """Retry-After in seconds or as an HTTP date; nonsense is ignored, not fatal."""
    if not value:
        return None
    value = value.strip()
    try:
        if value.isascii() and value.isdigit():
            delay = timedelta(seconds=min(int(value), MAX_RETRY_AFTER.total_seconds()))
        else:
            delay = parsedate_to_datetime(value).astimezone(UTC) - now
    except (TypeError, ValueError, OverflowError):
        return None
    return now + min(max(delay, timedelta(0)), MAX_RETRY_AFTER)
