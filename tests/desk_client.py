"""For the desk's HTTP tests: an editor, a client of the app, signing in with the CSRF token, API tokens;
and the newsroom pieces several desk tests set up."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from starlette.testclient import TestClient

from syndicate.db import transaction
from syndicate.desk import editors
from syndicate.http import api_tokens
from syndicate.models import Article, SocialAccount
from syndicate.social import accounts
from syndicate.web.app import create_app

PASSWORD = "correct horse battery"


def add_editor(svc, username: str = "ada", timezone: str | None = None) -> None:
    with transaction(svc.Session) as session:
        editor = editors.add(session, username, PASSWORD)
        if timezone:
            editors.set_timezone(editor, timezone)


def desk_client(**options) -> TestClient:
    """The app as a browser meets it: redirects are answers to look at, not to follow."""
    return TestClient(create_app(), base_url="http://testserver", follow_redirects=False, **options)


def csrf(client: TestClient, path: str = "/desk/login") -> str:
    """The session's CSRF token, as the page at `path` puts it in its forms."""
    return re.search(r'name="csrf" value="([^"]+)"', client.get(path).text).group(1)


def sign_in(client: TestClient, password: str = PASSWORD, username: str = "ada"):
    """The sign-in form sent as a browser would; the answer."""
    return client.post("/desk/login", data={"username": username, "password": password, "csrf": csrf(client),
                                            "next": "/desk"})


def signed_in(client: TestClient, username: str = "ada") -> str:
    """Signed in; the new session's CSRF token for the forms that follow."""
    assert sign_in(client, username=username).status_code == 303
    return csrf(client, "/desk/account")


def api_headers(svc, username: str = "ada") -> dict[str, str]:
    """An editor's own API token, as the header that carries it."""
    with transaction(svc.Session) as session:
        _, token = api_tokens.create_token(session, f"{username}:script", editor=editors.by_username(session, username))
    return {"Authorization": f"Bearer {token}"}


def dry_run_x_account(session, now: datetime, age: timedelta = timedelta(minutes=1)) -> SocialAccount:
    """x-main, a dry-run X account posting at any hour, made `age` ago: stories published since are its to tease."""
    account = accounts.add(session, "k", "x-main", "x", dict(window="always", dry_run=True), None)
    account.created_at = now - age
    return account


def fresh_story(session, now: datetime) -> Article:
    """A local story published just now, as a feed would have brought it."""
    article = Article(identity="fresh", url="https://news.example.com/fresh/",
                      title="Council approves the riverside library", lead="The vote was 7 to 2.",
                      content_hash="f" * 64, categories=["Local"], published_at=now, first_seen_at=now)
    session.add(article)
    return article
