"""A reader's topics and frequency on their preferences page: offered from the newsletter's categories,
saved and shown again; a topic or frequency the page didn't offer is refused with what to do, nothing is
saved, and the page keeps what the reader chose."""

from __future__ import annotations

import html

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from conftest import configured, submit
from syndicate import tokens
from syndicate.db import transaction
from syndicate.models import Subscriber, SubscriberEvent, Subscription
from syndicate.newsletters import lists
from syndicate.subscribers import choices, consent
from syndicate.web.app import create_app


@pytest.fixture
def site(make_settings, tmp_path, smtp_server):
    """Daily takes Politics, Sport and Weather (its include filter); Weekly has no filter and no edition yet."""
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'choices.db'}", smtp_url=smtp_server.url),
                     eager=True)
    with transaction(svc.Session) as session:
        lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com",
                             categories_include=["Politics", "Sport", "Weather"], categories_exclude=["Weather"])
        lists.add_newsletter(session, slug="weekly", name="Weekly", from_address="news@example.com")
    return svc


@pytest.fixture
def client(site):
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client


def reader(svc) -> tuple[int, str]:
    with transaction(svc.Session) as session:
        ids = [lists.get_newsletter(session, "daily").id, lists.get_newsletter(session, "weekly").id]
        subscriber_id = consent.subscribe(session, "reader@example.com", ids, confirmed=True).subscriber.id
    return subscriber_id, f"/p/{tokens.preferences_token(svc.settings.secret_key, subscriber_id)}"


def stored(svc) -> dict[str, tuple]:
    with transaction(svc.Session) as session:
        return {s.newsletter.slug: (s.topics, s.frequency, s.status) for s in session.scalars(select(Subscription))}


def test_the_page_offers_the_newsletters_topics_and_saves_the_readers_choice(client, site):
    subscriber_id, path = reader(site)
    page = client.get(path)
    assert 'value="daily:Politics"' in page.text and 'value="daily:Sport"' in page.text
    assert "daily:Weather" not in page.text  # excluded by the editor: never sent, so not offered
    assert 'value="weekly:Politics"' not in page.text  # Weekly has sent nothing yet: no topics to choose
    assert '<option value="daily:each" selected>' in page.text

    page = submit(client, path, data={"action": "save", "newsletter": ["daily", "weekly"],
                                      "topic": ["daily:sport"], "frequency": ["daily:weekly", "weekly:each"]})

    assert page.status_code == 200, page.text
    assert "Your topics or frequency for Daily apply from the next mail." in html.unescape(page.text)
    assert stored(site) == {"daily": (["Sport"], "weekly", "active"), "weekly": (None, "each", "active")}
    assert 'value="daily:Sport" checked' in page.text
    assert '<option value="daily:weekly" selected>' in page.text
    with transaction(site.Session) as session:
        assert session.scalars(select(SubscriberEvent.detail).where(SubscriberEvent.kind == "preferences")).all() \
            == ["topics: Sport; a weekly digest"]

    # none ticked: every story again
    submit(client, path, data={"action": "save", "newsletter": ["daily", "weekly"],
                               "frequency": ["daily:daily", "weekly:each"]})
    assert stored(site)["daily"] == (None, "daily", "active")


@pytest.mark.parametrize("topics, frequencies, says", [
    (["daily:Cooking"], ["daily:each", "weekly:each"], "Daily has no topic 'Cooking'; choose among: Politics, Sport"),
    (["daily:Weather"], ["daily:each", "weekly:each"], "Daily has no topic 'Weather'"),
    (["daily:Sport\r\nBcc: x@evil.example"], ["daily:each", "weekly:each"], "Daily has no topic 'Sport Bcc"),
    (["daily:Sport"], ["daily:hourly", "weekly:each"], "no frequency 'hourly'; choose each, daily or weekly"),
    (["daily:Sport"], ["daily:<script>alert(1)</script>", "weekly:each"], "no frequency '<script>alert(1)</script>'"),
    (["secret:Sport"], ["daily:each"], "a topic was chosen for a newsletter this page doesn't offer"),
    (["daily:Sport"], ["nosuch:weekly"], "a frequency was chosen for a newsletter this page doesn't offer"),
    (["daily:Sport"] * 501, ["daily:each"], "more choices than the page offers"),
])
def test_a_choice_the_page_did_not_offer_is_refused_saving_nothing_and_the_page_keeps_the_choice(
        client, site, topics, frequencies, says):
    _, path = reader(site)
    before = stored(site)

    page = submit(client, path, data={"action": "save", "newsletter": ["daily"], "topic": topics,
                                      "frequency": frequencies})

    assert page.status_code == 400
    assert "Nothing was saved: " in page.text and says in html.unescape(page.text)
    assert "<script>alert" not in page.text
    assert stored(site) == before  # not even the newsletter unticked
    assert 'value="weekly" id="n-weekly">' in page.text  # as the reader left it, not as stored
    if frequencies[0] == "daily:hourly":
        assert 'value="daily:Sport" checked' in page.text


def test_the_choices_in_the_form_are_the_ones_the_fan_out_reads(site):
    with transaction(site.Session) as session:
        daily = lists.get_newsletter(session, "daily")
        offered = choices.topics_of(session, daily)
        assert offered == ["Politics", "Sport"]
        assert choices.check_topics(daily, offered, ["SPORT", "sport"]) == ["Sport"]
        assert choices.check_topics(daily, offered, ["Politics", "Sport"]) is None  # all of them: every story
        assert choices.check_frequency("") == "each"
    with transaction(site.Session) as session:
        assert session.scalar(select(Subscriber.id)) is None
