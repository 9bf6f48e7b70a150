"""An address whose local part is longer than RFC 5321's 64 characters is refused with the reason, wherever a
person types or imports it: the subscribe form, `subscriber add`, `subscriber import`. One check does it
(subscribers.normalise_email), so this walks each entry point."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from conftest import configured, submit
from syndicate.cli.main import main
from syndicate.db import transaction
from syndicate.errors import InvalidInput
from syndicate.newsletters import lists
from syndicate.subscribers import consent
from syndicate.web.app import create_app

TOO_LONG = "a" * 65 + "@example.com"
LONGEST = "a" * 64 + "@example.com"
WHY = "the part before the @ is 65 characters long, and mail servers take at most 64"


@pytest.fixture
def syndicate(tmp_path):
    env = {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s"}
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(main, list(args), env=env)

    assert run("db", "upgrade").exit_code == 0
    assert run("newsletter", "add", "daily", "--name", "Daily", "--from-address", "news@example.com").exit_code == 0
    return run


def addresses(syndicate) -> list[str]:
    return [row["email"] for row in json.loads(syndicate("subscriber", "list", "--json").stdout)]


def test_the_subscribe_form_refuses_a_65_character_local_part_and_keeps_the_form(make_settings, tmp_path,
                                                                                 smtp_server):
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", smtp_url=smtp_server.url),
                     eager=True)
    with transaction(svc.Session) as session:
        lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com")
    with TestClient(create_app()) as client:
        refused = submit(client, "/subscribe", {"email": TOO_LONG, "newsletter": "daily"})
        accepted = submit(client, "/subscribe", {"email": LONGEST, "newsletter": "daily"})

    assert refused.status_code == 400
    assert WHY in refused.text and f'value="{TOO_LONG}"' in refused.text
    assert accepted.status_code == 200
    assert [m.recipients for m in smtp_server.messages] == [[LONGEST]]


def test_subscriber_add_refuses_a_65_character_local_part(syndicate):
    result = syndicate("subscriber", "add", TOO_LONG, "--newsletter", "daily", "--confirmed")

    assert result.exit_code != 0
    assert WHY in str(result.exception) + result.output
    assert syndicate("subscriber", "add", LONGEST, "--newsletter", "daily", "--confirmed").exit_code == 0
    assert addresses(syndicate) == [LONGEST]


def test_subscriber_import_lists_a_65_character_local_part_as_a_bad_row_and_imports_the_rest(syndicate, tmp_path):
    (tmp_path / "list.csv").write_text(f"email\n{TOO_LONG}\n{LONGEST}\n", encoding="utf-8")

    result = syndicate("subscriber", "import", str(tmp_path / "list.csv"), "--newsletter", "daily")

    assert result.exit_code == 1
    assert f"line 2: {TOO_LONG}" in result.output and WHY in result.output
    assert addresses(syndicate) == [LONGEST]


@given(st.integers(1, 100))
def test_a_local_part_is_accepted_exactly_when_it_is_at_most_64_characters(length):
    address = "x" * length + "@example.com"
    if length <= 64:
        assert consent.normalise_email(address) == address
    else:
        with pytest.raises(InvalidInput, match=f"{length} characters long"):
            consent.normalise_email(address)
