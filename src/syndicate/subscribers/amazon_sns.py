"""Amazon SNS messages: did Amazon SNS sign this one?

SNS signs each message it delivers over HTTP(S): SignatureVersion 1 is SHA1withRSA, 2 is SHA256withRSA,
over a canonical string of the message's fields, with the key in the certificate at SigningCertURL
(https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html). That URL comes from
the message, so it is fetched only from Amazon SNS's own hosts over https (TLS vouches for the host),
through the guarded fetcher, with a deadline and a size cap, and each certificate is kept in memory.

A good signature proves SNS sent the message, not that it came from your topic: the API token in the
subscription's URL is what says the topic is yours.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from syndicate.errors import FeedError, SyndicateError
from syndicate.ingest import fetch
from syndicate.models import utcnow

# Only Amazon SNS's own endpoints, e.g. sns.eu-west-1.amazonaws.com (or .amazonaws.com.cn in China):
# the SigningCertURL and SubscribeURL come from the request body, and fetching whatever they name is SSRF.
HOST = re.compile(r"sns\.[a-z]{2,4}(?:-[a-z]+)+-\d{1,2}\.amazonaws\.com(?:\.cn)?")
# The fields signed, in this order, "Name\nvalue\n" each; Subject only when the message has one.
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
CERT_TIMEOUT = 10.0  # seconds for the whole certificate fetch
CERT_MAX_BYTES = 64 * 1024  # an SNS signing certificate is under 2 KB
CERT_CACHE_SIZE = 64  # SNS uses one certificate per region at a time; a few rotations fit


class BadSignature(SyndicateError):
    """The message is not signed by Amazon SNS (or was changed since): nothing in it is acted on."""


class CertificateUnavailable(SyndicateError):
    """The signing certificate could not be fetched just now: the message is neither trusted nor refused
    for good, and SNS delivers it again later."""


def verify(message: dict) -> None:
    """Return if `message` (an SNS message, parsed) carries a good SNS signature; BadSignature says why not."""
    kind = message.get("Type")
    if kind not in SIGNED_FIELDS:
        raise BadSignature(f"an SNS message's Type is one of {', '.join(SIGNED_FIELDS)}; nothing was recorded")
    version = message.get("SignatureVersion")
    if version not in HASHES:
        raise BadSignature(f"SignatureVersion {version!r} is not one we check (1 or 2): the message is not "
                           "trusted and nothing was recorded")
    try:
        signature = base64.b64decode(message.get("Signature") or "", validate=True)
    except (binascii.Error, TypeError, ValueError):
        signature = b""
    if not signature:
        raise BadSignature("the SNS message has no readable Signature: it is not trusted and nothing was recorded")
    key = signing_key(message.get("SigningCertURL"))
    try:
        key.verify(signature, canonical(message), padding.PKCS1v15(), HASHES[version]())
    except InvalidSignature:
        raise BadSignature("the SNS message's signature does not match its content: it was changed or not sent "
                           "by Amazon SNS, and nothing was recorded") from None


def canonical(message: dict) -> bytes:
    """The string SNS signs for a message of this Type."""
    parts = []
    for name in SIGNED_FIELDS[message["Type"]]:
        value = message.get(name)
        if name == "Subject" and value is None:
            continue
        if not isinstance(value, str):
            raise BadSignature(f"the SNS message has no {name} string, which its signature covers; "
                               "nothing was recorded")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode()


def check_url(url, what: str) -> str:
    """`url` if it is https://<an SNS host>/... exactly: no user, no port, no backslash; BadSignature if not."""
    if not isinstance(url, str) or not url.isascii() or not url.isprintable() or any(c in url for c in " \\"):
        raise BadSignature(f"the SNS message has no usable {what}; nothing was fetched or recorded")
    scheme, _, rest = url.partition("://")
    # Everything up to the first "/" is the host, whole: no user, no port, no "?" or "#" before the path.
    if scheme != "https" or not HOST.fullmatch(rest.partition("/")[0]):
        raise BadSignature(f"refusing the {what} {url[:200]!r}: only https://sns.<region>.amazonaws.com/ is "
                           "fetched, and nothing was fetched or recorded")
    return url


# Public keys of the certificates fetched, by URL: SNS signs every message with the same few.
_keys: dict[str, rsa.RSAPublicKey] = {}
_keys_lock = threading.Lock()


def signing_key(url) -> rsa.RSAPublicKey:
    url = check_url(url, "SigningCertURL")
    if not url.partition("?")[0].endswith(".pem"):
        raise BadSignature(f"refusing the SigningCertURL {url[:200]!r}: SNS certificates are .pem files; "
                           "nothing was fetched or recorded")
    with _keys_lock:
        if url in _keys:
            return _keys[url]
    key = _fetch_key(url)
    with _keys_lock:
        if len(_keys) >= CERT_CACHE_SIZE:
            _keys.pop(next(iter(_keys)))  # the oldest: a rotated-out certificate
        _keys[url] = key
    return key


def forget_keys() -> None:
    """Drop every cached certificate (they are fetched again when next needed)."""
    with _keys_lock:
        _keys.clear()


def _fetch_key(url: str) -> rsa.RSAPublicKey:
    try:
        # No redirects: the checked URL is the only one fetched.
        with fetch.client(allow_private=False, timeout=CERT_TIMEOUT) as http:
            fetched = fetch.guarded_get(http, url, headers={}, deadline=time.monotonic() + CERT_TIMEOUT,
                                        max_bytes=CERT_MAX_BYTES, now=utcnow(), max_redirects=0)
    except FeedError as e:
        raise CertificateUnavailable(f"could not fetch the SNS signing certificate ({e}); SNS will deliver "
                                     "the message again") from e
    if fetched.status != 200:
        raise CertificateUnavailable(f"Amazon SNS answered {fetched.status} for its signing certificate; SNS "
                                     "will deliver the message again")
    try:
        key = x509.load_pem_x509_certificate(fetched.body).public_key()
    except ValueError as e:
        raise BadSignature("the SigningCertURL did not give a PEM certificate; nothing was recorded") from e
    if not isinstance(key, rsa.RSAPublicKey):
        raise BadSignature("the SNS signing certificate's key is not RSA; nothing was recorded")
    return key
