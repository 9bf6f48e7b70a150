"""A desk session ends when the editor says so: signing out, or a new password (from the desk or the CLI),
ends every session of that editor, so a cookie copied before is worth nothing after. Sign-in tries are
counted only when they fail, per name and client address: nobody can lock an editor out from elsewhere,
and signing in often never runs out."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from desk_client import PASSWORD, add_editor, desk_client, sign_in, signed_in
from syndicate.cli.main import main
from syndicate.desk import editors
from syndicate.desk import routes as desk

NEW_PASSWORD = "a whole new password"


def cookie(client) -> str:
    return client.cookies[desk.COOKIE]


def replayed(value: str, address: str = "198.51.100.9"):
    """A fresh browser (or an attacker's) sending a desk cookie copied earlier."""
    client = desk_client(client=(address, 40000))
    client.cookies.set(desk.COOKIE, value)
    return client


def refused(client) -> bool:
    """Sent to sign in, both as a page and as the desk's own scripts ask."""
    page = client.get("/desk")
    script = client.get("/desk", headers={"Accept": "application/json"})
    return (page.status_code == 303 and page.headers["location"].startswith("/desk/login")
            and script.status_code == 401)


@pytest.fixture
def ada(svc):
    add_editor(svc)


def test_a_cookie_copied_before_signing_out_is_refused_after_it_and_so_are_her_other_sessions(ada):
    laptop, phone = desk_client(), desk_client()
    token = signed_in(laptop)
    signed_in(phone)
    copied = cookie(laptop)
    assert replayed(copied).get("/desk").status_code == 200  # worth a session until she signs out

    assert laptop.post("/desk/logout", data={"csrf": token}).headers["location"] == "/desk/login"

    assert refused(replayed(copied))
    assert refused(phone)  # signing out ends every session of hers
    signed_in(laptop)  # and she can sign in again
    assert laptop.get("/desk").status_code == 200


def test_a_new_password_set_on_the_desk_ends_every_other_session_and_keeps_this_one(ada):
    laptop, phone = desk_client(), desk_client()
    token = signed_in(laptop)
    signed_in(phone)
    copied = cookie(laptop)

    changed = laptop.post("/desk/account/password", data={"csrf": token, "current": PASSWORD,
                                                          "password": NEW_PASSWORD, "again": NEW_PASSWORD})

    assert changed.status_code == 303
    assert laptop.get("/desk").status_code == 200  # the session that changed it goes on, with a new cookie
    assert refused(phone) and refused(replayed(copied))
    assert sign_in(desk_client(), PASSWORD).status_code == 401
    assert sign_in(desk_client(), NEW_PASSWORD).status_code == 303


def test_a_new_password_needs_the_current_one_and_says_what_was_wrong(ada):
    laptop, phone = desk_client(), desk_client()
    token = signed_in(laptop)
    signed_in(phone)
    for form, why in (({"current": "not my password", "password": NEW_PASSWORD, "again": NEW_PASSWORD},
                       "current password is wrong"),
                      ({"current": PASSWORD, "password": NEW_PASSWORD, "again": NEW_PASSWORD + "!"},
                       "type the same one twice"),
                      ({"current": PASSWORD, "password": "short", "again": "short"}, "at least 10 characters")):
        answer = laptop.post("/desk/account/password", data={"csrf": token, **form})
        assert answer.status_code == 400 and why in answer.text, form
    assert phone.get("/desk").status_code == 200  # nothing changed: her other session goes on
    assert sign_in(desk_client(), PASSWORD).status_code == 303


def test_a_new_password_set_from_the_cli_ends_every_session_of_that_editor(tmp_path):
    env = {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
           "SYNDICATE_BASE_URL": "http://testserver", "SYNDICATE_USER_PASSWORD": PASSWORD}

    def syndicate(*args: str, **extra: str):
        result = CliRunner().invoke(main, list(args), env={**env, **extra})
        assert result.exit_code == 0, (result.output, result.exception)

    syndicate("db", "upgrade")
    syndicate("user", "add", "ada")
    browser = desk_client()  # the CLI configured this process's services: the same database
    signed_in(browser)
    copied = cookie(browser)

    syndicate("user", "password", "ada", SYNDICATE_USER_PASSWORD=NEW_PASSWORD)

    assert refused(browser) and refused(replayed(copied))
    assert sign_in(desk_client(), NEW_PASSWORD).status_code == 303


def test_signing_in_often_never_uses_up_the_tries(ada):
    for _ in range(editors.ATTEMPTS * 5):
        assert sign_in(desk_client()).status_code == 303


def test_failures_from_one_address_lock_out_that_address_only(ada):
    attacker = desk_client(client=("203.0.113.66", 40000))
    for _ in range(editors.ATTEMPTS):
        assert "Wrong name or password." in sign_in(attacker, "guess guess guess").text

    stopped = sign_in(attacker)  # even the right password, from there
    assert stopped.status_code == 401 and "Too many sign-in attempts" in stopped.text
    assert "wait 15 minutes" in stopped.text

    editor = desk_client(client=("198.51.100.20", 40000))
    assert sign_in(editor).status_code == 303  # the editor, elsewhere, signs in as ever
    assert editor.get("/desk").status_code == 200


def test_a_success_clears_the_failures_before_it(ada):
    client = desk_client(client=("198.51.100.20", 40000))
    for _ in range(editors.ATTEMPTS - 1):
        sign_in(client, "typo typo typo")
    assert sign_in(client).status_code == 303
    for _ in range(editors.ATTEMPTS - 1):
        sign_in(client, "typo typo typo")
    assert sign_in(client).status_code == 303


def test_one_address_trying_many_names_runs_out_of_tries_for_all_of_them(ada):
    sprayer = desk_client(client=("203.0.113.67", 40000))
    for i in range(editors.ATTEMPTS * 4):
        sign_in(sprayer, "guess guess guess", username=f"name{i}")
    assert "Too many sign-in attempts" in sign_in(sprayer).text
    assert sign_in(desk_client(client=("198.51.100.21", 40000))).status_code == 303


def test_guessing_the_current_password_in_a_session_left_open_runs_out_of_tries_as_signing_in_does(ada):
    borrowed = desk_client(client=("203.0.113.70", 40000))
    token = signed_in(borrowed)
    for _ in range(editors.ATTEMPTS):
        guess = borrowed.post("/desk/account/password", data={"csrf": token, "current": "guess guess guess",
                                                              "password": NEW_PASSWORD, "again": NEW_PASSWORD})
        assert "current password is wrong" in guess.text
    right = borrowed.post("/desk/account/password", data={"csrf": token, "current": PASSWORD,
                                                          "password": NEW_PASSWORD, "again": NEW_PASSWORD})
    assert right.status_code == 400 and "Too many sign-in attempts" in right.text
    assert sign_in(desk_client(client=("198.51.100.22", 40000))).status_code == 303  # unchanged, usable elsewhere
