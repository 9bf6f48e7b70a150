"""A newsletter's oldest story (--max-age): a story older than that never goes into an edition, not even
one left over past --max-items, and the editor sees how many were left out for age."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import select

from conftest import configured
from syndicate.config import Settings
from syndicate.db import transaction
from syndicate.models import Article

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "test-secret",
            "SYNDICATE_DATABASE_URL": f"sqlite:///{tmp_path / 'test.db'}", "SYNDICATE_LINK_CHECK": "0"}


@pytest.fixture
def newsroom(env):
    return configured(Settings.from_env(env))


def stories(svc, *hours_old: int) -> None:
    with transaction(svc.Session) as session:
        for n, hours in enumerate(hours_old):
            when = NOW - timedelta(hours=hours)
            session.add(Article(identity=f"s{n}", url=f"https://news.example/{n}", title=f"{hours} hours old",
                                lead="A lead.", content_hash=str(n), categories=[], published_at=when,
                                first_seen_at=NOW - timedelta(hours=min(hours, 1))))


def test_a_story_past_the_newsletters_age_is_left_out_and_counted(console, newsroom):
    with time_machine.travel(NOW - timedelta(hours=2), tick=False):
        assert console("newsletter", "add", "daily", "--name", "Daily", "--from-address", "news@example.com",
                       "--max-items", "1", "--max-age", "72", "--first-fill", "hours:200")[0] == 0
    stories(newsroom, 1, 2, 120)  # the 5-day-old one came in with the fresh ones

    with time_machine.travel(NOW, tick=False):
        code, out, _ = console("edition", "cut", "daily", "--draft")
    assert code == 0 and "1 hours old" in console("edition", "show", "daily/1")[1]
    assert "left out: 1 stories older than 72 hours" in out

    # Four days on, the story left over past --max-items is too old too: it never leads an edition.
    with time_machine.travel(NOW + timedelta(days=4), tick=False):
        code, out, _ = console("edition", "cut", "daily", "--draft")
    assert "skipped" in out and "1 older than 72 hours left out" in out  # counted once: the 5-day-old one was
    with transaction(newsroom.Session) as session:
        assert [a.title for a in session.scalars(select(Article).order_by(Article.id))][1] == "2 hours old"
    listed = json.loads(console("edition", "list", "--json")[1])
    assert [(e["number"], e["left_out_for_age"]) for e in listed] == [(2, 1), (1, 1)]


def test_max_age_zero_takes_any_age_and_nonsense_is_refused(console, newsroom):
    with time_machine.travel(NOW - timedelta(hours=2), tick=False):
        console("newsletter", "add", "daily", "--name", "Daily", "--from-address", "news@example.com",
                "--first-fill", "hours:200", "--max-age", "0")
    stories(newsroom, 120)
    with time_machine.travel(NOW, tick=False):
        code, out, _ = console("edition", "cut", "daily", "--draft")
    assert code == 0 and "draft" in out
    code, _, err = console("newsletter", "edit", "daily", "--max-age", "-3")
    assert code == 2 and "--max-age" in err
    assert "max age:" in console("newsletter", "show", "daily")[1]


# ── subjects that read right for any count ───────────────────────────────────


def test_the_readmes_subject_reads_right_for_one_two_and_many_stories():
    from pathlib import Path

    from syndicate.models import Edition, Newsletter
    from syndicate.newsletters.rendering import check_subject_template, render_subject

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    template = readme.split('--subject "', 1)[1].split('" \\', 1)[0]
    check_subject_template(template)
    newsletter = Newsletter(slug="morning", name="Morning", subject_template=template)
    story = Article(title="Harbour reopens", url="https://news.example/1")
    subjects = [render_subject(newsletter, Edition(number=1), [story] * n) for n in (1, 2, 3, 12)]

    assert subjects == ["Harbour reopens", "Harbour reopens and 1 more story", "Harbour reopens and 2 more stories",
                        "Harbour reopens and 11 more stories"]


def test_plural_is_there_for_subject_and_edition_templates():
    from syndicate import templating

    said = templating.sandbox().from_string("{{ n|plural('story', 'stories') }}")
    assert [said.render(n=n) for n in (0, 1, 2)] == ["0 stories", "1 story", "2 stories"]
    assert templating.environment().from_string("{{ 1|plural('reader', 'readers') }}").render() == "1 reader"
