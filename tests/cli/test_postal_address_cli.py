"""The postal address from the command line to the reader's inbox: `newsletter add --postal-address`, lines
kept and hostile text harmless in the edition's footer (HTML and text) and the confirmation mail; refused
when it is no address; warned about while a newsletter that sends has none."""

from __future__ import annotations

import email
import email.policy
import re

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from starlette.testclient import TestClient

from conftest import cli_in, submit
from syndicate import db
from syndicate.cli.main import main
from syndicate.db import transaction
from syndicate.newsletters import lists
from syndicate.web.app import create_app

HOSTILE = "<b>Example</b> News & Co\n1 Main St\r\nBcc: victim@example.org\u2028Springfield, IL 62701"


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
            "SYNDICATE_BASE_URL": "https://news.example", "SYNDICATE_ALLOW_PRIVATE_FEEDS": "1",
            "SYNDICATE_LINK_CHECK": "0", "SYNDICATE_POSTAL_ADDRESS": None}


def test_an_editions_footer_carries_the_newsletters_address_line_by_line_and_nothing_more(
        env, tmp_path, feed_server, sample_feed):
    syndicate = cli_in(env)
    syndicate("db", "upgrade")
    syndicate("newsletter", "add", "daily", "--name", "Daily", "--from-address", "daily@news.example",
              "--max-age", "0", "--postal-address", HOSTILE)
    syndicate("feed", "add", feed_server.serve("/feed/", sample_feed))
    syndicate("feed", "poll")
    syndicate("subscriber", "add", "reader@example.org", "--newsletter", "daily", "--confirmed")
    syndicate("edition", "cut", "daily")
    syndicate("deliver")

    [mail] = (tmp_path / "data" / "outbox" / "mail").glob("*.eml")
    message = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
    assert message["Bcc"] is None and message["To"] == "reader@example.org"  # a line of it is no header
    text = message.get_body(("plain",)).get_content()
    assert ("<b>Example</b> News & Co\n1 Main St\nBcc: victim@example.org\nSpringfield, IL 62701\n"
            in text.replace("\r\n", "\n"))
    html = message.get_body(("html",)).get_content()
    assert re.search(r"&lt;b&gt;Example&lt;/b&gt; News &amp; Co<br\s*/?>1 Main St<br\s*/?>Bcc: victim@example.org"
                     r"<br\s*/?>Springfield, IL 62701</p>", html), html[-2000:]
    assert "<b>Example</b>" not in html
    assert "Springfield" in syndicate("newsletter", "show", "daily")


def test_the_confirmation_mail_carries_the_senders_address(make_settings, tmp_path, smtp_server):
    from conftest import configured

    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'c.db'}", smtp_url=smtp_server.url,
                                   postal_address="Default Address 9"), eager=True)
    with transaction(svc.Session) as session:
        lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com",
                             postal_address="Example News\n1 Main St")
    with TestClient(create_app()) as client:
        assert submit(client, "/subscribe", data={"email": "reader@example.org", "newsletter": "daily"}
                      ).status_code == 200
    [sent] = smtp_server.messages
    message = email.message_from_bytes(sent.data, policy=email.policy.default)
    assert message.get_body(("plain",)).get_content().replace("\r\n", "\n").endswith("Example News\n1 Main St\n")
    assert re.search(r"Example News<br\s*/?>1 Main St", message.get_body(("html",)).get_content())
    assert "Default Address" not in sent.data.decode()  # its own, not the default


@pytest.mark.parametrize("address", ["\n".join(f"line {n}" for n in range(9)), "x" * 501])
def test_an_address_that_is_no_address_is_refused_saying_what_to_give(env, address):
    syndicate = cli_in(env)
    syndicate("db", "upgrade")
    refused = CliRunner().invoke(main, ["newsletter", "add", "daily", "--name", "Daily", "--from-address",
                                        "daily@news.example", "--postal-address", address], env=env)
    assert refused.exit_code != 0
    assert "at most 8 lines and 500 characters" in str(refused.exception) + refused.output
    assert "e.g. 'Example News, 1 Main St" in str(refused.exception) + refused.output
    assert "daily" not in syndicate("newsletter", "list")


def test_adding_a_newsletter_without_an_address_warns_until_one_is_given(env):
    syndicate = cli_in(env)
    syndicate("db", "upgrade")
    added = CliRunner().invoke(main, ["newsletter", "add", "daily", "--name", "Daily", "--from-address",
                                      "daily@news.example"], env=env)
    assert added.exit_code == 0
    assert "warning: no postal address: daily would send mail without one" in added.stderr
    edited = CliRunner().invoke(main, ["newsletter", "edit", "daily", "--postal-address", "Example News"], env=env)
    assert edited.exit_code == 0 and "warning" not in edited.stderr


def test_a_default_address_in_the_environment_is_checked_at_start(env):
    result = CliRunner().invoke(main, ["newsletter", "list"], env=env | {"SYNDICATE_POSTAL_ADDRESS": "y" * 501})
    assert result.exit_code != 0
    assert "SYNDICATE_POSTAL_ADDRESS: a postal address is at most" in str(result.exception) + result.output


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_newsletters_made_before_the_address_existed_keep_going_with_the_default(backend, tmp_path, request):
    url = f"sqlite:///{tmp_path / 'old.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    from syndicate.config import Settings

    engine = db.make_engine(Settings.from_env({"SYNDICATE_DATABASE_URL": url, "SYNDICATE_SECRET_KEY": "x",
                                               "SYNDICATE_DATA_DIR": str(tmp_path)}).database_url)
    db.upgrade(engine, "0018")
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO newsletters (slug, name, from_name, from_address, subject_template, template, timezone, "
            "max_items, first_fill, status, articles_since, created_at) VALUES ('old', 'Old', 'Old', "
            "'old@example.com', 's', 'edition', 'UTC', 20, 'none', 'active', :t, :t)"), {"t": "2026-01-01 00:00:00"})
    db.upgrade(engine)
    with engine.begin() as connection:
        assert connection.execute(sa.text("SELECT postal_address FROM newsletters")).scalar_one() == ""
    engine.dispose()
