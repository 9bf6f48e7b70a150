"""Links to stories, from feeds and CMS pushes: kept only as absolute http(s) URIs, and checked again where one
becomes an `href`.

A feed is written by a stranger: `<link>javascript:…</link>` (which `urljoin` passes through unchanged) was
stored as a story's address and became a script on the public web view and the desk. Only a web address is a
story link; an IRI (`https://例え.jp/東京?q=北京`) is kept as its URI (IDNA host, percent-encoded UTF-8), which
every mail client and network links whole.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit, urlunsplit

import idna

from syndicate.errors import InvalidInput

MAX_LENGTH = 2048  # Article.url's size, and what browsers and networks take without trouble

_EDGES = re.compile(r"^[\s\x00-\x20]+|[\s\x00-\x20]+$")
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# RFC 3986's unreserved and reserved characters, and "%" of the escapes already there: kept as they are.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE = _PATH_SAFE + "?"


class NotAWebLink(InvalidInput):
    """A link that can't be a story's address; the message says why."""


def web_link(value: str) -> str:
    """`value` as an absolute http(s) URI, or NotAWebLink saying why it can't be one."""
    text = _EDGES.sub("", value or "")
    shown = text if len(text) <= 80 else text[:77] + "…"
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise NotAWebLink(f"{shown!r} is not a web address a story can link to: give a full http:// or "
                          "https:// URL")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as e:  # a port that isn't a number, a bracket that doesn't close
        raise NotAWebLink(f"{shown!r} is not a web address ({e})") from e
    if not host:
        raise NotAWebLink(f"{shown!r} has no host name: give the story's full address, e.g. https://example.com/…")
    if parts.username is not None or parts.password is not None:
        raise NotAWebLink(f"{shown!r} has a user name or password in it; a story's public address has none")
    netloc = _host(host, shown) + (f":{port}" if port is not None else "")
    path = quote(_LONE_PERCENT.sub("%25", parts.path), safe=_PATH_SAFE) or "/"
    query = quote(_LONE_PERCENT.sub("%25", parts.query), safe=_QUERY_SAFE)
    fragment = quote(_LONE_PERCENT.sub("%25", parts.fragment), safe=_QUERY_SAFE)
    uri = urlunsplit((scheme, netloc, path, query, fragment))
    if len(uri) > MAX_LENGTH:
        raise NotAWebLink(f"{shown!r} is longer than {MAX_LENGTH} characters as a URI")
    return uri


def _host(host: str, shown: str) -> str:
    if ":" in host:  # an IPv6 literal, already checked by urlsplit
        return f"[{host}]"
    if host.isascii():
        if not re.fullmatch(r"[a-z0-9_.-]+", host) or ".." in host:
            raise NotAWebLink(f"{shown!r} has a host name that can't be one ({host!r})")
        return host
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as e:
        raise NotAWebLink(f"{shown!r} has a host name that can't be one ({e})") from e


def href(value: str | None) -> str:
    """For a template: the link as an `href` may carry it, or "" for one that isn't a web address (a row
    stored before links were checked, an image address from a feed). Templates leave the anchor out then."""
    try:
        return web_link(value or "")
    except NotAWebLink:
        return ""
