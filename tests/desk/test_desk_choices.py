"""Readers' choices on the desk: a subscriber's topics and frequency per newsletter on their page, and the
welcome digest switched on and off in a newsletter's settings."""

from __future__ import annotations

import re

from sqlalchemy import select

from conftest import clicks_newsroom
from desk_client import add_editor, desk_client
from desk_client import signed_in as sign_in
from syndicate.db import transaction
from syndicate.models import Subscriber, Subscription
from syndicate.newsletters import lists


def settings_form(**changes) -> dict:
    form = dict(name="Morning", from_name="Morning", from_address="news@example.com", reply_to="",
                subject_template="{{ top.title }}", template="edition", cron="", timezone="UTC", max_items="20",
                categories_include="", categories_exclude="", breaking_categories="")
    return form | changes


def test_an_editor_sees_a_readers_topics_and_frequency(svc):
    clicks_newsroom(svc, start=False)
    add_editor(svc)
    with transaction(svc.Session) as session:
        subscription = session.scalars(select(Subscription).join(Subscriber)
                                       .where(Subscriber.email == "ann@example.org")).one()
        subscription.topics, subscription.frequency = ["Sport", "<b>Local</b>"], "weekly"
        ann = subscription.subscriber_id
    client = desk_client()
    sign_in(client)

    page = client.get(f"/desk/subscribers/{ann}").text

    assert '<td class="topics">Sport, &lt;b&gt;Local&lt;/b&gt;</td><td class="frequency">weekly</td>' in page


def test_an_editor_turns_the_welcome_digest_on_and_off_in_the_settings(svc):
    clicks_newsroom(svc, start=False)
    add_editor(svc)
    client = desk_client()
    token = sign_in(client)
    assert client.post("/desk/newsletters/morning", data=settings_form(csrf=token, welcome_digest="true")) \
        .status_code == 303
    with transaction(svc.Session) as session:
        assert lists.get_newsletter(session, "morning").welcome_digest is True
    assert re.search(r'name="welcome_digest" value="true" checked', client.get("/desk/newsletters/morning").text)
    client.post("/desk/newsletters/morning", data=settings_form(csrf=token))  # unticked: absent from the form
    with transaction(svc.Session) as session:
        assert lists.get_newsletter(session, "morning").welcome_digest is False
