"""Signed tokens for links in mails: they prove who clicked without a login."""

from __future__ import annotations

import hashlib
import hmac
from functools import cache

from itsdangerous import BadSignature, URLSafeSerializer

from syndicate.errors import InvalidInput


@cache  # signing happens once per recipient of every edition: build the serializer once
def _serializer(secret_key: str, purpose: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret_key, salt=f"syndicate.{purpose}")


def unsubscribe_token(secret_key: str, subscriber_id: int, newsletter_id: int) -> str:
    # No expiry: an unsubscribe link in a years-old mail must still work.
    return _serializer(secret_key, "unsubscribe").dumps([subscriber_id, newsletter_id])


def read_unsubscribe_token(secret_key: str, token: str) -> tuple[int, int]:
    try:
        subscriber_id, newsletter_id = _serializer(secret_key, "unsubscribe").loads(token)
    except (BadSignature, ValueError, TypeError) as e:
        raise InvalidInput("this unsubscribe link is damaged; copy the whole link from the email") from e
    return int(subscriber_id), int(newsletter_id)


def confirm_token(secret_key: str, subscriber_id: int) -> str:
    return _serializer(secret_key, "confirm").dumps(subscriber_id)


def read_confirm_token(secret_key: str, token: str) -> int:
    try:
        return int(_serializer(secret_key, "confirm").loads(token))
    except (BadSignature, ValueError, TypeError) as e:
        raise InvalidInput("this confirmation link is damaged; copy the whole link from the email") from e


def preferences_token(secret_key: str, subscriber_id: int) -> str:
    # No expiry either: the preferences link sits in the footer of every mail.
    return _serializer(secret_key, "preferences").dumps(subscriber_id)


def read_preferences_token(secret_key: str, token: str) -> int:
    try:
        return int(_serializer(secret_key, "preferences").loads(token))
    except (BadSignature, ValueError, TypeError) as e:
        raise InvalidInput("this preferences link is damaged; copy the whole link from the email") from e


def derive(secret_key: str, purpose: str) -> str:
    """A key of its own for each use of SYNDICATE_SECRET_KEY: a cookie key can't sign an unsubscribe link."""
    return hmac.new(secret_key.encode(), f"syndicate.{purpose}".encode(), hashlib.sha256).hexdigest()
