"""Editors: the people who sign in to the desk. Passwords are hashed with argon2id. Failed sign-ins are
limited per name and client address together (so failures from elsewhere never lock an editor out) and per
address across names, counted in the database so every web worker shares them; one that works counts not.
An editor's session version ends all their desk sessions at once (signing out, a new password)."""

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
ATTEMPTS, WINDOW = 5, 15 * 60  # failed sign-ins per name and address in WINDOW seconds (per address: 4 times that)
TOO_MANY = ("Too many sign-in attempts failed from your address: wait 15 minutes, or ask another editor to set "
            "a new password with `syndicate user password NAME`.")
WRONG = "Wrong name or password."
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


def by_username(session: Session, username: str) -> Editor:
    editor = session.scalar(select(Editor).where(Editor.username == username.strip().lower()))
    if editor is None:
        raise NotFound(f"no editor named {username!r}; `syndicate user list` shows them")
    return editor


def all_editors(session: Session) -> list[Editor]:
    """Every editor, disabled ones too, by name."""
    return list(session.scalars(select(Editor).order_by(Editor.username)))


def set_password(editor: Editor, password: str) -> None:
    """A new password; every session signed in with the old one ends."""
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"the password must have at least {MIN_PASSWORD} characters")
    editor.password_hash = _hasher.hash(password)
    end_sessions(editor)


def end_sessions(editor: Editor) -> None:
    """Every desk session of this editor ends: their cookies carry the version this moves past."""
    editor.session_version = (editor.session_version or 0) + 1


def change_password(session: Session, editor: Editor, current: str, password: str, again: str, address: str,
                    now: datetime | None = None) -> str:
    """An editor's own new password, given the current one (a wrong one counts as a failed sign-in, so a
    session left open can't be used to guess it). "" when set, else why not — returned, not raised, so
    the caller commits the failure it counted."""
    if password != again:
        return "The two new passwords don't match: type the same one twice. Nothing was changed."
    if len(password) < MIN_PASSWORD:
        return f"The new password must have at least {MIN_PASSWORD} characters. Nothing was changed."
    checked, refusal = _checked(session, editor.username, current, address, now or utcnow())
    if checked is None:
        return "Your current password is wrong: nothing was changed." if refusal == WRONG else refusal
    set_password(checked, password)
    return ""


def set_timezone(editor: Editor, zone: str) -> None:
    """The zone the desk shows this editor's times in (IANA name, e.g. Europe/Berlin)."""
    from syndicate.newsletters.schedules import check_schedule

    check_schedule(None, zone)
    editor.timezone = zone


def sign_in(session: Session, username: str, password: str, address: str,
            now: datetime | None = None) -> tuple[Editor | None, str]:
    """(the editor, "") if the name and password match and this name and address have failures left;
    (None, why) otherwise — returned, not raised, so the caller commits the failure it counted."""
    now = now or utcnow()
    editor, refusal = _checked(session, username, password, address, now)
    if editor is not None:
        editor.last_sign_in_at = now
    return editor, refusal


def _checked(session: Session, username: str, password: str, address: str,
             now: datetime) -> tuple[Editor | None, str]:
    username = username.strip().lower()[:64]
    # Addresses have no spaces, so this key names one pair whatever was typed as the name.
    pair, anywhere = f"sign-in:failed:{address} {username}", f"sign-in:failed:{address}"
    # Counted before the check, so tries sent at once can't slip past the limit; given back if it works.
    if not (throttle.hit(session, pair, ATTEMPTS, WINDOW, now)
            and throttle.hit(session, anywhere, ATTEMPTS * 4, WINDOW, now)):
        return None, TOO_MANY
    editor = session.scalar(select(Editor).where(Editor.username == username, Editor.disabled_at.is_(None)))
    try:  # an unknown name is checked against a dummy hash: the answer takes as long either way
        _hasher.verify(editor.password_hash if editor else _DUMMY, password)
    except (VerificationError, InvalidHashError):
        return None, WRONG
    if editor is None:
        return None, WRONG
    throttle.forget(session, pair)  # the right password: this pair's earlier typos are forgiven too
    throttle.refund(session, anywhere)
    if _hasher.check_needs_rehash(editor.password_hash):
        editor.password_hash = _hasher.hash(password)
    return editor, ""


def describe(editor: Editor) -> dict:
    return dict(username=editor.username, created_at=editor.created_at, last_sign_in_at=editor.last_sign_in_at,
                status="disabled" if editor.disabled_at else "active")
