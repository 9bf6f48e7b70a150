"""API tokens: the secrets a CMS sends to push stories, created and revoked by the operator; and an
editor's own tokens for the desk's JSON API (/api/v1), made by the editor on the desk or with
`syndicate token create NAME --editor USER`.

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
from syndicate.models import ApiToken, Editor, utcnow

PREFIX = "syn_"  # recognisable in a CMS's settings and to secret scanners
HOW_TO_GET_ONE = "an operator creates one with `syndicate token create NAME`"


class NotAuthenticated(SyndicateError):
    """A request came without a valid API token; the message says how to get one."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, name: str, now: datetime | None = None,
                 editor: Editor | None = None) -> tuple[ApiToken, str]:
    """A new token for `name` (an editor's own, if `editor`): the row, and the token itself, which is
    stored nowhere."""
    name = name.strip()
    if not name or len(name) > 100 or not name.isprintable():
        raise InvalidInput("a token name is 1 to 100 printable characters, e.g. `wordpress`")
    existing = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if existing is not None:
        state = "revoked" if existing.revoked_at else "in use"
        raise InvalidInput(f"a token named {name!r} already exists ({state}); choose another name, "
                           f"e.g. {name + '-2'!r}")
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=hash_token(token), created_at=now or utcnow(),
                   editor_id=editor.id if editor else None)
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


def authenticate_editor(session: Session, token: str | None, now: datetime | None = None) -> Editor:
    """The editor whose token this is, for the desk's API: a CMS's token (no editor) or a disabled editor's
    is refused."""
    row = authenticate(session, token, now)
    editor = session.get(Editor, row.editor_id) if row.editor_id is not None else None
    if editor is None:
        raise NotAuthenticated("this token may push stories but not use the desk's API; an editor makes their "
                               "own on the desk (API tokens) or with `syndicate token create NAME --editor USER`")
    if editor.disabled_at is not None:
        raise NotAuthenticated(f"editor {editor.username!r} is disabled: their tokens are refused")
    return editor


def revoke(session: Session, name: str, now: datetime | None = None) -> ApiToken:
    """Refuse the token from now on; the row stays, so the name says when it was last used."""
    row = session.scalar(select(ApiToken).where(ApiToken.name == name.strip()))
    if row is None:
        raise NotFound(f"no API token named {name!r}; `syndicate token list` shows them")
    if row.revoked_at is None:
        row.revoked_at = now or utcnow()
    return row


def list_tokens(session: Session, editor: Editor | None = None) -> list[ApiToken]:
    """Every token, or only `editor`'s own."""
    query = select(ApiToken).order_by(ApiToken.name)
    if editor is not None:
        query = query.where(ApiToken.editor_id == editor.id)
    return list(session.scalars(query))
