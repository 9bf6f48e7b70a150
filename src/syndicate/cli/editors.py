"""`syndicate user` and `syndicate token`: editors of the desk, and API tokens."""

from __future__ import annotations

import os

import click

from syndicate.cli.common import emit, json_option, lazy, opened, services
from syndicate.http.scopes import SCOPES

db = lazy("syndicate.db")
api_tokens = lazy("syndicate.http.api_tokens")
models = lazy("syndicate.models")
editors = lazy("syndicate.desk.editors")


# ── editors ──────────────────────────────────────────────────────────────────


@click.group()
def user() -> None:
    """Editors who sign in to the desk (/desk)."""


def _new_password() -> str:
    return os.environ.get("SYNDICATE_USER_PASSWORD") or click.prompt(
        "password (10 characters or more)", hide_input=True, confirmation_prompt=True, err=True)


@user.command("add")
@click.argument("name")
@click.option("--timezone", metavar="ZONE", help="the zone the desk shows their times in, e.g. Europe/Berlin")
@click.pass_context
def user_add(ctx, name: str, timezone: str | None) -> None:
    """Create an editor called NAME; the password is asked for twice (hidden) and stored as an argon2id hash.

    SYNDICATE_USER_PASSWORD gives the password instead, for scripts."""
    svc = services(ctx)
    password = _new_password()
    with db.transaction(svc.Session) as session:
        row = editors.add(session, name, password)
        if timezone:
            editors.set_timezone(row, timezone)
        username = row.username
    click.echo(f"editor {username!r} added: sign in at {svc.settings.base_url}/desk")


@user.command("password")
@click.argument("name")
@click.pass_context
def user_password(ctx, name: str) -> None:
    """Set a new password for NAME; every desk session of theirs ends (they sign in again)."""
    svc = services(ctx)
    password = _new_password()
    with db.transaction(svc.Session) as session:
        editors.set_password(editors.by_username(session, name), password)
    click.echo(f"editor {name!r}: new password set; their desk sessions are signed out")


@user.command("disable")
@click.argument("name")
@click.pass_context
def user_disable(ctx, name: str) -> None:
    """NAME can't sign in any more; their open sessions end at their next click, their API tokens now."""
    with opened(ctx) as (svc, session):
        editors.by_username(session, name).disabled_at = models.utcnow()
    click.echo(f"editor {name!r} disabled")


@user.command("list")
@json_option
@click.pass_context
def user_list(ctx, as_json: bool) -> None:
    """Editors, and when each last signed in."""
    with opened(ctx) as (svc, session):
        rows = [editors.describe(e) for e in editors.all_editors(session)]
    emit(rows, as_json, ["username", "status", "created_at", "last_sign_in_at"])


# ── API tokens ───────────────────────────────────────────────────────────────


@click.group()
def token() -> None:
    """API tokens, each with the scopes it was made for: a CMS's to push stories, a scraper's to read
    metrics, a mail provider's to report bounces; an editor's, for the desk's API (/api/v1)."""


SCOPE_HELP = "what the token may do; repeat for more than one. " + "; ".join(
    f"{scope}: {allows}" for scope, allows in SCOPES.items())
SCOPE_USE = {"articles:push": "POST {base}/api/articles", "metrics:read": "GET {base}/metrics",
             "events:bounces": "POST {base}/api/events/bounces", "desk:api": "the desk's API, {base}/api/v1 "
             "(documented at /docs)"}


@token.command("create")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, metavar="SCOPE", help=SCOPE_HELP)
@click.option("--editor", "editor_name", metavar="USER",
              help="an editor's own token, for the desk's API (/api/v1): its scope is desk:api")
@click.pass_context
def token_create(ctx, name: str, scopes: tuple[str, ...], editor_name: str | None) -> None:
    """Create a token for NAME and print it, once.

    NAME says who uses it, e.g. `wordpress`. Only a hash of the token is stored. Give each token only
    the scopes its holder needs, e.g. `syndicate token create wordpress --scope articles:push` or
    `syndicate token create prometheus --scope metrics:read`; a token without --scope (and without
    --editor) is refused, since no one scope fits every use.
    """
    with opened(ctx) as (svc, session):
        editor = editors.by_username(session, editor_name) if editor_name else None
        row, secret = api_tokens.create_token(session, name, editor=editor, scopes=scopes)
        granted = api_tokens.scopes_of(row)
    # The token alone on stdout, so `TOKEN=$(syndicate token create wordpress ...)` works; the note on stderr.
    click.echo(secret)
    uses = "; ".join(f"{scope} for {SCOPE_USE[scope].format(base=svc.settings.base_url)}" for scope in granted)
    click.echo(f"token {row.name!r} created. Copy it now: the token itself is not stored and cannot be shown again.\n"
               f"Send it as `Authorization: Bearer <token>`. Scopes: {uses}", err=True)


@token.command("list")
@json_option
@click.pass_context
def token_list(ctx, as_json: bool) -> None:
    """Tokens, their scopes, and when they were last used (never the tokens themselves)."""
    with opened(ctx) as (svc, session):
        rows = [dict(name=t.name, scopes=api_tokens.scopes_of(t) if as_json else " ".join(api_tokens.scopes_of(t)),
                     status="revoked" if t.revoked_at else "active", created_at=t.created_at,
                     last_used_at=t.last_used_at, revoked_at=t.revoked_at)
                for t in api_tokens.list_tokens(session)]
    emit(rows, as_json, ["name", "scopes", "status", "created_at", "last_used_at", "revoked_at"])


@token.command("revoke")
@click.argument("name")
@click.pass_context
def token_revoke(ctx, name: str) -> None:
    """Refuse NAME's token from now on."""
    with opened(ctx) as (svc, session):
        row = api_tokens.revoke(session, name)
    click.echo(f"token {row.name!r} revoked: it is refused from now on")
