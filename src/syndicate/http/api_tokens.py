"""API tokens: the secrets a CMS, a metrics scraper or a mail provider sends, created and revoked by the
operator; and an editor's own tokens for the desk's JSON API (/api/v1), made by the editor on the desk or
with `syndicate token create NAME --editor USER`.

Each token carries the scopes it was made with, and every route that takes a token asks for exactly one
(SCOPES): the token made for the metrics scraper can read metrics and nothing else.

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
from syndicate.http.scopes import EDITOR_SCOPE, SCOPES
from syndicate.models import ApiToken, Editor, utcnow

PREFIX = "syn_"  # recognisable in a CMS's settings and to secret scanners
HOW_TO_GET_ONE = "an operator creates one with `syndicate token create NAME --scope SCOPE`"



def describe_scopes() -> str:
    """One scope a line, for an error said in a terminal."""
    return "".join(f"\n  {scope:<15} {allows}" for scope, allows in SCOPES.items())


class NotAuthenticated(SyndicateError):
    """A request came without a valid API token; the message says how to get one."""


class OutOfScope(SyndicateError):
    """A valid token asked for something its scopes don't allow: answered 403, naming the scope it lacks."""

    def __init__(self, token: ApiToken, scope: str):
        self.scope = scope
        how = ("an editor makes their own on the desk (API tokens) or with `syndicate token create NAME --editor "
               "USER`" if scope == EDITOR_SCOPE else
               f"an operator creates one with `syndicate token create NAME --scope {scope}`")
        super().__init__(f"token {token.name!r} lacks the scope {scope!r} ({SCOPES[scope]}); it has: "
                         f"{', '.join(scopes_of(token)) or 'none'}. For this, {how}")


def scopes_of(token: ApiToken) -> list[str]:
    return token.scopes.split()


def check_scopes(scopes, editor: Editor | None) -> list[str]:
    """The scopes a new token gets, in SCOPES' order. An editor's token has desk:api and only that (given or
    not: it is the one scope that fits it); any other token must name its scopes, since no single one fits
    every CMS, scraper or provider, and a guess would hand out more than was meant."""
    scopes = [s.strip() for s in scopes if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise InvalidInput(f"unknown scope {unknown[0]!r}; the scopes are:{describe_scopes()}")
    if editor is not None:
        if set(scopes) - {EDITOR_SCOPE}:
            raise InvalidInput(f"an editor's token has only the scope {EDITOR_SCOPE!r} (it acts as the editor); "
                               "make a separate token without --editor for a CMS, a scraper or a provider")
        return [EDITOR_SCOPE]
    if EDITOR_SCOPE in scopes:
        raise InvalidInput(f"{EDITOR_SCOPE!r} acts as an editor: make it with --editor USER (or on the desk)")
    if not scopes:
        raise InvalidInput("name what the token may do with --scope (repeat it for more than one); the scopes "
                           f"are:{describe_scopes()}")
    return [s for s in SCOPES if s in scopes]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, name: str, now: datetime | None = None,
                 editor: Editor | None = None, scopes=()) -> tuple[ApiToken, str]:
    """A new token for `name` (an editor's own, if `editor`) with `scopes` (see check_scopes): the row, and
    the token itself, which is stored nowhere."""
    scopes = check_scopes(scopes, editor)
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
                   editor_id=editor.id if editor else None, scopes=" ".join(scopes))
    session.add(row)
    session.flush()
    return row, token


def authenticate(session: Session, token: str | None, scope: str, now: datetime | None = None) -> ApiToken:
    """The token's row, its use recorded; NotAuthenticated if it is unknown or revoked, OutOfScope if it
    hasn't `scope` (checked after the token itself: a stranger learns nothing about scopes)."""
    if scope not in SCOPES:
        raise ValueError(f"no such scope: {scope!r}")  # a bug of ours, not the caller's
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
    if scope not in scopes_of(row):
        raise OutOfScope(row, scope)
    row.last_used_at = now or utcnow()
    return row


def authenticate_editor(session: Session, token: str | None, now: datetime | None = None) -> Editor:
    """The editor whose token this is, for the desk's API: a CMS's token (no editor) or a disabled editor's
    is refused."""
    row = authenticate(session, token, EDITOR_SCOPE, now)
    editor = session.get(Editor, row.editor_id) if row.editor_id is not None else None
    if editor is None:  # desk:api is only ever given with an editor; a row edited by hand is refused too
        raise OutOfScope(row, EDITOR_SCOPE)
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
