"""Signed tokens for links in mails: they prove who clicked without a login."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import zlib
from functools import cache

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer

from syndicate.errors import InvalidInput


@cache  # signing happens once per recipient of every edition: build the serializer once
def _serializer(secret_key: str, purpose: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret_key, salt=f"syndicate.{purpose}")


class _Signer:
    """Makes the same tokens as `_serializer(secret_key, purpose).dumps` of whole numbers, five times
    faster: every edition signs two links per recipient, and itsdangerous's way (a new Signer, a key
    derived again and a zlib stream per token) was 0.17 ms of a message's 1.2 ms of worker CPU.
    tests/shared/test_tokens.py checks the bytes against itsdangerous; reading a token stays with itsdangerous.
    """

    def __init__(self, secret_key: str, purpose: str):
        # itsdangerous's defaults: key derivation "django-concat", HMAC-SHA1, URL-safe base64 unpadded.
        key = hashlib.sha1(f"syndicate.{purpose}".encode() + b"signer" + secret_key.encode()).digest()
        self.mac = hmac.new(key, digestmod=hashlib.sha1)

    def dumps(self, *numbers: int) -> str:
        if not all(type(n) is int for n in numbers):  # bool is an int, and JSON writes it otherwise
            raise TypeError(f"whole numbers only: {numbers!r}")
        json = (str(numbers[0]) if len(numbers) == 1 else f"[{','.join(map(str, numbers))}]").encode()
        payload = _b64(json)
        # URLSafeSerializer sends the JSON zlib-compressed when that is 2 bytes shorter. A zlib stream
        # of a non-empty input is at least 9 bytes, so it can only be for JSON longer than 10.
        if len(json) > 10 and len(compressed := zlib.compress(json)) < len(json) - 1:
            payload = b"." + _b64(compressed)
        mac = self.mac.copy()
        mac.update(payload)
        return (payload + b"." + _b64(mac.digest())).decode("ascii")


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@cache
def _signer(secret_key: str, purpose: str) -> _Signer:
    return _Signer(secret_key, purpose)


def unsubscribe_token(secret_key: str, subscriber_id: int, newsletter_id: int) -> str:
    # No expiry: an unsubscribe link in a years-old mail must still work.
    return _signer(secret_key, "unsubscribe").dumps(subscriber_id, newsletter_id)


def read_unsubscribe_token(secret_key: str, token: str) -> tuple[int, int]:
    try:
        subscriber_id, newsletter_id = _serializer(secret_key, "unsubscribe").loads(token)
    except (BadSignature, ValueError, TypeError) as e:
        raise InvalidInput("this unsubscribe link is damaged; copy the whole link from the email") from e
    return int(subscriber_id), int(newsletter_id)


def confirm_token(secret_key: str, subscriber_id: int) -> str:
    return _signer(secret_key, "confirm").dumps(subscriber_id)


def read_confirm_token(secret_key: str, token: str) -> int:
    return _read_subscriber(secret_key, "confirm", token, "confirmation")


def preferences_token(secret_key: str, subscriber_id: int) -> str:
    # No expiry either: the preferences link sits in the footer of every mail.
    return _signer(secret_key, "preferences").dumps(subscriber_id)


def read_preferences_token(secret_key: str, token: str) -> int:
    return _read_subscriber(secret_key, "preferences", token, "preferences")


ERASE_LINK_HOURS = 48  # the link that confirms "delete my data": a mailbox read later by someone else can't


def erase_token(secret_key: str, subscriber_id: int) -> str:
    return URLSafeTimedSerializer(secret_key, salt="syndicate.erase").dumps(subscriber_id)


def read_erase_token(secret_key: str, token: str, max_age: int = ERASE_LINK_HOURS * 3600) -> int:
    """The subscriber who asked to erase their data; an expired link says to ask again."""
    try:
        return int(URLSafeTimedSerializer(secret_key, salt="syndicate.erase").loads(token, max_age=max_age))
    except SignatureExpired as e:
        raise InvalidInput(f"this link has expired: it works for {ERASE_LINK_HOURS} hours. Ask again from the "
                           "preferences page (the link at the foot of every newsletter)") from e
    except (BadSignature, ValueError, TypeError) as e:
        raise InvalidInput("this link is damaged; copy the whole link from the email") from e


def _read_subscriber(secret_key: str, purpose: str, token: str, link: str) -> int:
    """The subscriber id a link of `purpose` was signed for; a damaged one is refused, saying which link."""
    try:
        return int(_serializer(secret_key, purpose).loads(token))
    except (BadSignature, ValueError, TypeError) as e:
        raise InvalidInput(f"this {link} link is damaged; copy the whole link from the email") from e


def derive(secret_key: str, purpose: str) -> str:
    """A key of its own for each use of SYNDICATE_SECRET_KEY: a cookie key can't sign an unsubscribe link."""
    return hmac.new(secret_key.encode(), f"syndicate.{purpose}".encode(), hashlib.sha256).hexdigest()


# ── counted links ────────────────────────────────────────────────────────────
#
# An edition's story link, when its newsletter counts clicks: BASE_URL/r/<edition id>/<link number>.<mark>.
# The mark proves we made the link, so nobody can count a click for a link that isn't in an edition; it names
# the edition and the link only, never a reader: every reader's copy holds the same links.

_LINK_MARK = re.compile(r"[A-Za-z0-9_-]{16}")


@cache  # one key per secret: every story link of an edition is marked with it, once, at the render
def _link_mac(secret_key: str) -> hmac.HMAC:
    return hmac.new(derive(secret_key, "counted-link").encode(), digestmod=hashlib.sha256)


def link_mark(secret_key: str, edition_id: int, number: int) -> str:
    """16 URL-safe characters (96 bits of an HMAC) that vouch for link `number` of edition `edition_id`."""
    mac = _link_mac(secret_key).copy()
    mac.update(f"{edition_id}/{number}".encode())
    return _b64(mac.digest()[:12]).decode("ascii")


def link_mark_holds(secret_key: str, edition_id: int, number: int, mark: str) -> bool:
    return bool(_LINK_MARK.fullmatch(mark)) and hmac.compare_digest(mark, link_mark(secret_key, edition_id, number))


# ── return paths (VERP) ──────────────────────────────────────────────────────
#
# A mail's envelope sender names what it was (`d` a delivery of an edition, `c` a confirmation mail to a
# subscriber), so a bounce report sent back to it finds its row without reading the report's prose:
# bounces+d1234-k3v0q8m2hx7c5r1t@bounces.example.com. The mark is an HMAC, so a report forged by
# someone who never got the mail names no row. Lowercase letters and digits only: a few MTAs fold the
# local part's case, and `-` and `+` are all a local part here needs.

RETURN_PATH_PREFIX = "bounces"
RETURN_PATH_KINDS = ("d", "c")
_RETURN_PATH = re.compile(rf"{RETURN_PATH_PREFIX}\+([a-z])([1-9][0-9]{{0,17}})-([a-z2-7]{{16}})@([^@\s>]+)", re.I)


@cache  # one per recipient of every edition: the key is derived and the HMAC keyed once
def _return_path_mac(secret_key: str) -> hmac.HMAC:
    return hmac.new(derive(secret_key, "return-path").encode(), digestmod=hashlib.sha256)


def _return_path_mark(secret_key: str, kind: str, number: int) -> str:
    mac = _return_path_mac(secret_key).copy()
    mac.update(f"{kind}{number}".encode())
    return base64.b32encode(mac.digest()[:10]).decode("ascii").lower()  # 80 bits, 16 characters


def return_path(secret_key: str, kind: str, number: int, domain: str) -> str:
    """The envelope sender of mail `kind` number `number`: bounces+<kind><number>-<mark>@domain."""
    assert kind in RETURN_PATH_KINDS and type(number) is int and number > 0, (kind, number)
    return f"{RETURN_PATH_PREFIX}+{kind}{number}-{_return_path_mark(secret_key, kind, number)}@{domain}"


def read_return_path(secret_key: str, address: str) -> tuple[str, int] | None:
    """(kind, number) if `address` is one of our return paths with a mark that verifies; None otherwise
    (another address, a damaged one, or one forged without our key)."""
    match = _RETURN_PATH.fullmatch(address.strip().strip("<>"))
    if match is None:
        return None
    kind, number, mark = match[1].lower(), int(match[2]), match[3].lower()
    if kind not in RETURN_PATH_KINDS or not hmac.compare_digest(mark, _return_path_mark(secret_key, kind, number)):
        return None
    return kind, number
