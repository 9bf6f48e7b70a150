"""`syndicate user …` and `syndicate token create --editor`: editors for the desk, made from a terminal."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from syndicate.cli.main import main

PASSWORD = "correct horse battery"


@pytest.fixture
def syndicate(tmp_path):
    env = {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
           "SYNDICATE_BASE_URL": "http://testserver"}

    def run(*args: str, **extra_env: str):
        result = CliRunner().invoke(main, list(args), env={**env, **extra_env}, catch_exceptions=True)
        result.said = result.output + str(result.exception or "")  # an error of ours is raised, then printed
        return result

    assert run("db", "upgrade").exit_code == 0
    return run


def test_an_operator_adds_an_editor_who_gets_a_token_for_the_api(syndicate):
    added = syndicate("user", "add", "Ada", "--timezone", "Europe/Berlin", SYNDICATE_USER_PASSWORD=PASSWORD)
    assert added.exit_code == 0 and "editor 'ada' added: sign in at http://testserver/desk" in added.output
    [ada] = json.loads(syndicate("user", "list", "--json").output)
    assert (ada["username"], ada["status"], ada["last_sign_in_at"]) == ("ada", "active", None)

    made = syndicate("token", "create", "ada:script", "--editor", "ada")
    assert made.exit_code == 0 and "/api/v1" in made.stderr
    token = made.stdout.strip()
    from syndicate.web.app import create_app  # the CLI configured this process's services: same database

    client = TestClient(create_app())
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json() == {"username": "ada", "timezone": "Europe/Berlin"}

    assert syndicate("user", "disable", "ada").exit_code == 0
    refused = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401 and "disabled" in refused.json()["error"]


def test_it_refuses_a_short_password_a_bad_name_and_an_unknown_editor_clearly(syndicate):
    short = syndicate("user", "add", "ada", SYNDICATE_USER_PASSWORD="short")
    assert short.exit_code != 0 and "at least 10 characters" in short.said
    bad = syndicate("user", "add", "Ada Lovelace", SYNDICATE_USER_PASSWORD=PASSWORD)
    assert bad.exit_code != 0 and "lower-case letters" in bad.said
    zone = syndicate("user", "add", "ada", "--timezone", "Berlin", SYNDICATE_USER_PASSWORD=PASSWORD)
    assert zone.exit_code != 0 and "IANA" in zone.said
    assert json.loads(syndicate("user", "list", "--json").output) == []  # nothing half-made
    unknown = syndicate("token", "create", "x", "--editor", "nobody")
    assert unknown.exit_code != 0 and "syndicate user list" in unknown.said


def test_a_new_password_replaces_the_old_one(syndicate, tmp_path):
    syndicate("user", "add", "ada", SYNDICATE_USER_PASSWORD=PASSWORD)
    assert syndicate("user", "password", "ada", SYNDICATE_USER_PASSWORD="another long one").exit_code == 0
    from syndicate import services
    from syndicate.db import transaction
    from syndicate.desk import editors

    with transaction(services.current().Session) as session:
        assert editors.sign_in(session, "ada", "another long one", "test")[0] is not None
        assert editors.sign_in(session, "ada", PASSWORD, "test")[0] is None
