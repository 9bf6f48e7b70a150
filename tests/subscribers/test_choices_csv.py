"""Readers' choices in the CSV files: topics ("|" between them, "*" for every story) and frequency columns,
checked per row with its line, through the command an editor runs; the export gives them back, and
importing the export again changes nothing."""

from __future__ import annotations

import csv
import io

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from conftest import configured
from syndicate.cli.main import main
from syndicate.config import Settings
from syndicate.db import transaction
from syndicate.models import Newsletter, Subscriber, Subscription


@pytest.fixture
def syndicate(tmp_path):
    env = {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s"}
    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None):
        return runner.invoke(main, list(args), env=env, input=input)

    assert run("db", "upgrade").exit_code == 0
    assert run("newsletter", "add", "daily", "--name", "Daily", "--from-address", "news@example.com",
               "--include-category", "Politics", "--include-category", "Local news",
               "--include-category", "Sport").exit_code == 0
    assert run("newsletter", "add", "weekly", "--name", "Weekly", "--from-address", "news@example.com",
               "--include-category", "Sport").exit_code == 0
    run.svc = configured(Settings.from_env(env))
    return run


def choices(svc) -> dict[tuple[str, str], tuple]:
    with transaction(svc.Session) as session:
        return {(email, slug): (topics, frequency) for email, slug, topics, frequency in session.execute(
            select(Subscriber.email, Newsletter.slug, Subscription.topics, Subscription.frequency)
            .join(Subscription, Subscription.subscriber_id == Subscriber.id)
            .join(Newsletter, Newsletter.id == Subscription.newsletter_id))}


def test_the_import_sets_each_readers_topics_and_frequency_and_refuses_bad_ones_by_line(syndicate):
    data = ("email;newsletters;topics;frequency\n"
            "ann@example.com;daily;politics|Local news;weekly\n"
            "bo@example.com;daily weekly;sport;\n"
            "cy@example.com;daily;;daily\n"
            "dee@example.com;daily;Cooking;each\n"
            "eve@example.com;daily;Sport;hourly\n"
            "fay@example.com;daily weekly;Politics;\n"
            "gus@example.com;daily;=cmd|' /C calc'!A0;\n")

    result = syndicate("subscriber", "import", "-", input=data)

    assert result.exit_code == 1, result.output
    assert result.stdout.startswith("3 added")
    assert "line 5: dee@example.com: Daily has no topic 'Cooking'; choose among: Local news, Politics, Sport " \
           "(topics column; topics separated by '|', '*' for every story)" in result.stdout
    assert "line 6: eve@example.com: no frequency 'hourly'; choose each, daily or weekly (frequency column" \
        in result.stdout
    assert "line 7: fay@example.com: Weekly has no topic 'Politics'; choose among: Sport" in result.stdout
    assert "line 8: gus@example.com: Daily has no topic '=cmd'" in result.stdout
    assert choices(syndicate.svc) == {
        ("ann@example.com", "daily"): (["Politics", "Local news"], "weekly"),
        ("bo@example.com", "daily"): (["Sport"], "each"),
        ("bo@example.com", "weekly"): (None, "each"),  # every topic Weekly has: every story
        ("cy@example.com", "daily"): (None, "daily"),
    }

    # a known reader: empty cells keep their choices, "*" takes every story again
    again = syndicate("subscriber", "import", "-", input="email,newsletters,topics,frequency\n"
                                                        "ann@example.com,daily,,\nbo@example.com,daily,*,daily\n")
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith("0 added, 1 updated, 1 unchanged")
    found = choices(syndicate.svc)
    assert found["ann@example.com", "daily"] == (["Politics", "Local news"], "weekly")
    assert found["bo@example.com", "daily"] == (None, "daily")


def test_the_export_gives_the_choices_back_and_importing_it_again_changes_nothing(syndicate, tmp_path):
    syndicate("subscriber", "import", "-", input="email,newsletters,topics,frequency\n"
                                                 "ann@example.com,daily,Politics|Local news,weekly\n"
                                                 "bo@example.com,daily,,\n")
    path = tmp_path / "out.csv"
    assert syndicate("subscriber", "export", "--newsletter", "daily", "--output", str(path)).exit_code == 0
    exported = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig")))
    rows = {r["email"]: (r["topics"], r["frequency"]) for r in exported}
    assert rows == {"ann@example.com": ("Politics|Local news", "weekly"), "bo@example.com": ("", "each")}

    before = choices(syndicate.svc)
    result = syndicate("subscriber", "import", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("0 added, 0 updated, 2 unchanged")
    assert choices(syndicate.svc) == before
