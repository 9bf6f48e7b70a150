"""`syndicate demo`: the whole pipeline once, on the bundled sample feed, with no services at all."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from syndicate import ledger
from syndicate.db import transaction, upgrade
from syndicate.delivery import deliveries, sending
from syndicate.delivery.batches import send_batch
from syndicate.errors import NotFound
from syndicate.ingest import documents, feeds
from syndicate.mail.outbox import OutboxTransport
from syndicate.models import Delivery, Post, utcnow
from syndicate.newsletters import editions, lists, rendering, stored
from syndicate.services import Services
from syndicate.social import pace, posts
from syndicate.subscribers import consent

FEED_URL = "https://truthusa.example/feed/"
NEWSLETTER = dict(slug="morning-briefing", name="The Morning Briefing", from_address="briefing@truthusa.example",
                  from_name="TruthUSA News Hub", cron="0 7 * * *", timezone="Europe/Berlin",
                  max_age_hours=0)  # the sample stories are from 2023: any age, or the demo sends nothing
SUBSCRIBERS = [("ada@example.com", "Ada Lovelace"), ("bjorn@example.com", "Bjørn Ødegård"),
               ("chen@example.com", "陈静")]


@dataclass
class Report:
    articles_new: int = 0
    articles_known: int = 0
    edition: str = ""  # what became of the edition, in words
    mails: list[Path] = field(default_factory=list)
    mails_already: int = 0
    posts: list[Post] = field(default_factory=list)
    posts_already: int = 0
    preview: Path | None = None


def sample_feed() -> bytes:
    return files("syndicate").joinpath("sample/feed.xml").read_bytes()


def run(svc: Services, progress=lambda items, label: items) -> Report:
    settings = svc.settings
    upgrade(svc.engine)
    report = Report()
    with transaction(svc.Session) as session:
        feed = feeds.add_feed(session, FEED_URL)
        try:
            newsletter = lists.get_newsletter(session, NEWSLETTER["slug"])
        except NotFound:  # the first run
            newsletter = lists.add_newsletter(session, **NEWSLETTER)
            for email, name in SUBSCRIBERS:
                consent.subscribe(session, email, [newsletter.id], name=name, confirmed=True)
        posts.ensure_default_account(session)
        report.mails_already = ledger.tally(session, Delivery).get("sent", 0)
        report.posts_already = ledger.tally(session, Post).get("posted", 0)

    # feed → article
    with transaction(svc.Session) as session:
        entries = documents.parse(sample_feed(), FEED_URL)
        new_ids, _ = feeds.store(session, session.merge(feed), entries, utcnow())
        report.articles_new, report.articles_known = len(new_ids), len(entries) - len(new_ids)

    # article → edition (cut now rather than wait for 07:00)
    batches = []
    with transaction(svc.Session) as session:
        newsletter = session.merge(newsletter)
        edition_id = None
        if editions.new_articles(session, newsletter):
            cut = sending.cut(session, newsletter, settings)
            edition_id, batches = cut.edition.id, cut.batches
        else:
            report.edition = (f"no new articles since edition #{stored.last_edition_number(session, newsletter)}: "
                              "no edition cut")
        batches += deliveries.requeue(session, settings, utcnow())

    # edition → delivery, into the outbox folder as .eml files
    mail_dir = settings.outbox / "mail"
    before = set(mail_dir.glob("*.eml")) if mail_dir.exists() else set()
    transport = OutboxTransport(mail_dir)
    for batch_edition, lo, hi in progress(batches, "Delivering") if batches else ():
        send_batch(svc.Session, settings, transport, batch_edition, lo, hi,
                   token=f"demo-{batch_edition}-{lo}")
    with transaction(svc.Session) as session:
        deliveries.requeue(session, settings, utcnow())  # closes the edition once every row is done
        if edition_id is not None:
            edition = stored.edition_by_id(session, edition_id)
            report.edition = (f"#{edition.number} of {edition.newsletter.name}, {len(edition.items)} stories, "
                              f"{edition.status}: {edition.subject!r}")
            report.preview = rendering.write_preview(settings, edition)[0]
    report.mails = sorted(set(mail_dir.glob("*.eml")) - before) if mail_dir.exists() else []

    # article → post, dry-run: each network's exact request and the time pacing would post it, in the outbox
    with transaction(svc.Session) as session:
        posts.ensure_default_account(session)
        posts.plan(session, settings)
        # The bundled sample stories are from 2023: a real tick would skip them as too old, but the demo is
        # here to show the teasers, so it keeps them.
        planned = [(post.id, account, at) for account, waiting in pace.queues(session, skip_too_old=False)
                   for post, at in waiting]
        for post_id, _, at in planned:
            posts.by_id(session, post_id).planned_at = at
        # the demo never posts for real, whatever credentials an account has
        clients = {account.id: svc.social_client(account, dry_run=True) for _, account, _ in planned}
        jobs = [(post_id, clients[account.id]) for post_id, account, _ in planned]
    for post_id, client in jobs:
        post = posts.publish(svc.Session, settings, client, post_id, token=f"demo-post-{post_id}")
        report.posts.append(post)
    return report
