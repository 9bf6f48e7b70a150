"""Proof that a reader's form (subscribe, confirm, preferences) came from our own page, without a cookie.

The public pages have no session, and a reader may block cookies, so each form carries a signed,
time-limited token (itsdangerous, keyed from SYNDICATE_SECRET_KEY) naming the form's purpose and, for
confirm and preferences, bound to the signed token in the page's URL: a token from one form or one reader
never passes for another. The request must also come from our own origin (SYNDICATE_BASE_URL's): browsers
send Origin on every POST, a cross-site page can't forge it, and Referer stands in where Origin is absent.
A request with neither (a script, an old browser) still needs the token, which only our pages hand out.

RFC 8058 one-click unsubscribe (POST /u/TOKEN) is exempt by design: the mailbox provider posts it with no
cookie, no Origin and no form, and the signed token in the URL is its authentication.
"""

from __future__ import annotations

import hashlib
from functools import cache
from urllib.parse import urlsplit

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from syndicate import tokens

FORM_HOURS = 12  # a form open longer than this is handed back to be sent again
PURPOSES = ("subscribe", "confirm", "preferences", "undo", "erase")


class FormRefused(Exception):
    """A POST from another site, or without our form's token: answered 403, nothing changed."""


class FormExpired(Exception):
    """Our own form, but open for more than FORM_HOURS: the page is shown again to be sent once more."""


@cache
def _serializer(secret_key: str, purpose: str) -> URLSafeTimedSerializer:
    if purpose not in PURPOSES:
        raise ValueError(f"no form has the purpose {purpose!r}")
    return URLSafeTimedSerializer(tokens.derive(secret_key, "forms"), salt=f"syndicate.form.{purpose}")


def _binding(bound_to: str) -> str:
    # A digest, not the URL token itself: the form token stays short and repeats no credential.
    return hashlib.sha256(bound_to.encode()).hexdigest()[:32]


def token(secret_key: str, purpose: str, bound_to: str = "") -> str:
    """The hidden field of a form for `purpose`, bound to `bound_to` (the URL's token, or nothing)."""
    return _serializer(secret_key, purpose).dumps(_binding(bound_to))


def check_token(secret_key: str, given: object, purpose: str, bound_to: str = "") -> None:
    """FormRefused unless `given` is our token for this purpose and binding; FormExpired if it is too old."""
    if not isinstance(given, str) or not given:
        raise FormRefused
    serializer = _serializer(secret_key, purpose)
    try:
        binding = serializer.loads(given, max_age=FORM_HOURS * 3600)
    except SignatureExpired as e:
        # Only a token we signed gets this far: check the binding before calling it merely old.
        if e.payload is None or serializer.load_payload(e.payload) != _binding(bound_to):
            raise FormRefused from e
        raise FormExpired from e
    except (BadSignature, ValueError, TypeError) as e:
        raise FormRefused from e
    if binding != _binding(bound_to):
        raise FormRefused


def origin_of(url: str) -> str:
    """scheme://host[:port] as a browser writes it in Origin (the default port left out)."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # a Referer we can't read is no proof of anything
        return ""
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" + (f":{port}" if port and port != default else "")


def check_origin(base_url: str, origin: str | None, referer: str | None) -> None:
    """FormRefused unless the browser says the request came from our own origin.

    "null" is refused: a sandboxed frame or a redirect from elsewhere sends it, and it proves nothing.
    """
    ours = origin_of(base_url)
    if origin is not None:
        if origin.strip().lower() != ours:
            raise FormRefused
    elif referer:
        if origin_of(referer) != ours:
            raise FormRefused
