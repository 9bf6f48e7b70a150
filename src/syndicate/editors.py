"""Editors: the people who sign in to the desk. Passwords are hashed with argon2id; sign-in attempts
are limited per name and per client address, counted in the database so every web worker shares them."""

from __future__ import annotations

import re
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from syndicate import throttle
from syndicate.errors import InvalidInput, NotFound
from syndicate.models import Editor, utcnow

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MIN_PASSWORD = 10
ATTEMPTS, WINDOW = 5, 15 * 60  # sign-in attempts per name, and per address, in WINDOW seconds
_hasher = PasswordHasher()  # argon2id with the library's current parameters (RFC 9106's second choice)
_DUMMY = _hasher.hash("an unknown name costs the same time as a wrong password")


def add(session: Session, username: str, password: str) -> Editor:
    username = username.strip().lower()
    if not NAME.fullmatch(username):
        raise InvalidInput(f"editor name {username!r}: use lower-case letters, digits, '.', '-' and '_'")
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"the password must have at least {MIN_PASSWORD} characters")
    if session.scalar(select(Editor).where(Editor.username == username)):
        raise InvalidInput(f"an editor named {username!r} exists already; `syndicate user password {username}` "
                           "sets a new password")
    editor = Editor(username=username, password_hash=_hasher.hash(password), created_at=utcnow())
    session.add(editor)
    session.flush()
    return editor


def get(session: Session, username: str) -> Editor:
    editor = session.scalar(select(Editor).where(Editor.username == username.strip().lower()))
    if editor is None:
        raise NotFound(f"no editor named {username!r}; `syndicate user list` shows them")
    return editor


def set_password(editor: Editor, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"the password must have at least {MIN_PASSWORD} characters")
    editor.password_hash = _hasher.hash(password)


def set_timezone(editor: Editor, zone: str) -> None:
    """The zone the desk shows this editor's times in (IANA name, e.g. Europe/Berlin)."""
    from syndicate.editions import check_schedule

    check_schedule(None, zone)
    editor.timezone = zone


def sign_in(session: Session, username: str, password: str, address: str,
            now: datetime | None = None) -> tuple[Editor | None, str]:
    """(the editor, "") if the name and password match and neither the name nor the address has used up
    its tries; (None, why) otherwise — returned, not raised, so the caller commits the tries it counted."""
    now = now or utcnow()
    username = username.strip().lower()[:64]
    if not (throttle.hit(session, f"sign-in:name:{username}", ATTEMPTS, WINDOW, now)
            and throttle.hit(session, f"sign-in:address:{address}", ATTEMPTS * 4, WINDOW, now)):
        return None, ("Too many sign-in attempts: wait 15 minutes, or ask another editor to set a new password "
                      "with `syndicate user password NAME`.")
    editor = session.scalar(select(Editor).where(Editor.username == username, Editor.disabled_at.is_(None)))
    try:  # an unknown name is checked against a dummy hash: the answer takes as long either way
        _hasher.verify(editor.password_hash if editor else _DUMMY, password)
    except (VerificationError, InvalidHashError):
        return None, "Wrong name or password."
    if editor is None:
        return None, "Wrong name or password."
    if _hasher.check_needs_rehash(editor.password_hash):
        editor.password_hash = _hasher.hash(password)
    editor.last_sign_in_at = now
    return editor, ""


def describe(editor: Editor) -> dict:
    return dict(username=editor.username, created_at=editor.created_at, last_sign_in_at=editor.last_sign_in_at,
                status="disabled" if editor.disabled_at else "active")
