"""API tokens: the secrets a CMS sends to push stories, created and revoked by the operator.

A token is shown once, when it is made; the database keeps only its sha256, so a
copy of the database lets nobody push. Looking a token up by its hash also keeps
the comparison constant-time: the secret itself is never compared byte by byte.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from syndicate.errors import InvalidInput, NotFound, SyndicateError
from syndicate.models import ApiToken, utcnow

PREFIX = "syn_"  # recognisable in a CMS's settings and to secret scanners
HOW_TO_GET_ONE = "an operator creates one with `syndicate token create NAME`"


class NotAuthenticated(SyndicateError):
    """A request came without a valid API token; the message says how to get one."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, name: str, now: datetime | None = None) -> tuple[ApiToken, str]:
    """A new token for `name`: the row, and the token itself, which is stored nowhere."""
    name = name.strip()
    if not name or len(name) > 100 or not name.isprintable():
        raise InvalidInput("a token name is 1 to 100 printable characters, e.g. `wordpress`")
    existing = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if existing is not None:
        state = "revoked" if existing.revoked_at else "in use"
        raise InvalidInput(f"a token named {name!r} already exists ({state}); choose another name, "
                           f"e.g. {name + '-2'!r}")
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=hash_token(token), created_at=now or utcnow())
    session.add(row)
    session.flush()
    return row, token


def authenticate(session: Session, token: str | None, now: datetime | None = None) -> ApiToken:
    """The token's row, its use recorded; NotAuthenticated if it is unknown or revoked."""
    if not token:
        raise NotAuthenticated(f"this needs an API token in `Authorization: Bearer <token>`; {HOW_TO_GET_ONE}")
    if not token.startswith(PREFIX):
        raise NotAuthenticated(f"that is not a syndicate API token (they start with {PREFIX!r}); {HOW_TO_GET_ONE}")
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None:
        raise NotAuthenticated(f"this API token is not known here (mistyped, or from another install?); "
                               f"{HOW_TO_GET_ONE}")
    if row.revoked_at is not None:
        raise NotAuthenticated(f"this API token was revoked; {HOW_TO_GET_ONE}")
    row.last_used_at = now or utcnow()
    return row


def revoke(session: Session, name: str, now: datetime | None = None) -> ApiToken:
    """Refuse the token from now on; the row stays, so the name says when it was last used."""
    row = session.scalar(select(ApiToken).where(ApiToken.name == name.strip()))
    if row is None:
        raise NotFound(f"no API token named {name!r}; `syndicate token list` shows them")
    if row.revoked_at is None:
        row.revoked_at = now or utcnow()
    return row


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.name)))
