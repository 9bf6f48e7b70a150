"""article → edition: schedules, the cut (a frozen list of stories), and the render done once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from jinja2 import TemplateError
from premailer import Premailer
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from syndicate import deliveries
from syndicate.config import Settings
from syndicate.deliveries import PREFERENCES_URL, UNSUBSCRIBE_URL
from syndicate.errors import InvalidInput, NotFound
from syndicate.models import Article, Edition, EditionArticle, Newsletter, utcnow
from syndicate.templating import one_line, render, sandbox

# ── newsletters and schedules ────────────────────────────────────────────────


def check_schedule(cron: str, timezone: str) -> None:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise InvalidInput(f"unknown time zone {timezone!r}; use an IANA name like Europe/Berlin") from e
    try:
        CronSim(cron, datetime.now(zone))
    except CronSimError as e:
        raise InvalidInput(f"bad cron expression {cron!r}: {e}; e.g. '0 7 * * *' for 07:00 daily") from e


def next_run(cron: str, timezone: str, after: datetime) -> datetime:
    """The next send time strictly after `after`, computed in local time (DST-correct), as UTC."""
    local = after.astimezone(ZoneInfo(timezone))
    return next(CronSim(cron, local)).astimezone(UTC)


def add_newsletter(session: Session, *, slug: str, name: str, from_address: str, from_name: str | None = None,
                   cron: str = "0 7 * * *", timezone: str = "UTC", max_items: int = 20,
                   now: datetime | None = None) -> Newsletter:
    now = now or utcnow()
    check_schedule(cron, timezone)
    if session.scalar(select(Newsletter.id).where(Newsletter.slug == slug)):
        raise InvalidInput(f"a newsletter called {slug!r} already exists")
    newsletter = Newsletter(
        slug=slug, name=name, from_address=from_address, from_name=from_name or name,
        cron=cron, timezone=timezone, max_items=max_items, articles_since=now,
        next_run_at=next_run(cron, timezone, now), created_at=now,
    )
    session.add(newsletter)
    session.flush()
    return newsletter


def get_newsletter(session: Session, slug: str) -> Newsletter:
    newsletter = session.scalar(select(Newsletter).where(Newsletter.slug == slug))
    if newsletter is None:
        raise NotFound(f"no newsletter {slug!r}; `syndicate newsletter list` shows them")
    return newsletter


# ── the cut ──────────────────────────────────────────────────────────────────


@dataclass
class Cut:
    edition: Edition
    batches: list[tuple[int, int, int]]  # (edition id, first and last delivery id) to hand to workers


def due_newsletter_ids(session: Session, now: datetime) -> list[int]:
    return list(session.scalars(
        select(Newsletter.id).where(Newsletter.status == "active", Newsletter.next_run_at <= now)
    ))


def claim(session: Session, newsletter_id: int, now: datetime) -> Newsletter | None:
    """Claim a due newsletter by moving its next run forward; None if it wasn't due or was taken.

    The conditional UPDATE is the lock: a second beat tick or worker finds the row
    already moved and gets nothing. The next run is computed from now, so a scheduler
    that was down catches up once, not once per missed tick.
    """
    newsletter = session.get(Newsletter, newsletter_id)
    due = newsletter is not None and newsletter.status == "active" and newsletter.next_run_at is not None
    if not due or newsletter.next_run_at > now:
        return None
    moved = session.execute(
        update(Newsletter)
        .where(Newsletter.id == newsletter.id, Newsletter.next_run_at == newsletter.next_run_at)
        .values(next_run_at=next_run(newsletter.cron, newsletter.timezone, now))
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:
        return None
    session.refresh(newsletter)
    return newsletter


def new_articles(session: Session, newsletter: Newsletter) -> list[Article]:
    """Stories not yet in any edition of this newsletter, newest first."""
    already = select(EditionArticle.article_id).where(EditionArticle.newsletter_id == newsletter.id)
    query = select(Article).where(Article.first_seen_at >= newsletter.articles_since, Article.id.not_in(already))
    if newsletter.feed_ids:
        query = query.where(Article.feed_id.in_(newsletter.feed_ids))
    query = query.order_by(Article.published_at.desc(), Article.id.desc()).limit(newsletter.max_items)
    return list(session.scalars(query))


def cut(session: Session, newsletter: Newsletter, settings: Settings, now: datetime | None = None) -> Cut:
    """Freeze the next edition: its stories, its rendered content and its recipients."""
    now = now or utcnow()
    number = (session.scalar(select(func.max(Edition.number)).where(Edition.newsletter_id == newsletter.id)) or 0) + 1
    articles = new_articles(session, newsletter)
    edition = Edition(newsletter_id=newsletter.id, number=number, cut_at=now, scheduled_for=now, created_at=now)
    session.add(edition)
    if not articles:
        edition.status, edition.note = "skipped", "no new articles since the last edition"
        session.flush()
        return Cut(edition, [])
    session.flush()
    for position, article in enumerate(articles):
        session.add(EditionArticle(edition_id=edition.id, newsletter_id=newsletter.id,
                                   article_id=article.id, position=position))
    edition.subject, edition.html, edition.text = render_edition(newsletter, edition, articles, settings)
    edition.status = "sending"
    session.flush()
    return Cut(edition, deliveries.fan_out(session, edition, settings.batch_size, now))


# ── the render, once per edition ─────────────────────────────────────────────


def web_url(settings: Settings, newsletter: Newsletter, edition: Edition) -> str:
    return f"{settings.base_url}/n/{newsletter.slug}/{edition.number}"


def render_subject(newsletter: Newsletter, edition: Edition, articles: list[Article]) -> str:
    try:
        subject = sandbox().from_string(newsletter.subject_template).render(
            top=articles[0], rest=len(articles) - 1, articles=articles, newsletter=newsletter, edition=edition,
        )
    except TemplateError as e:
        raise InvalidInput(f"the subject template of {newsletter.slug!r} is broken: {e}") from e
    return one_line(subject)[:300] or newsletter.name


GMAIL_CLIPS_AT = 102 * 1024  # bytes of HTML; Gmail shows "[Message clipped]" beyond this
PERSONAL = re.compile(r"<!--personal-->.*?<!--/personal-->", re.S)  # the recipient's own links


def render_context(newsletter: Newsletter, edition: Edition, articles: list[Article], settings: Settings,
                   subject: str) -> dict:
    """What the edition templates see. Per-recipient links are placeholders, filled in at send."""
    return dict(
        newsletter=newsletter, edition=edition, articles=articles, subject=subject,
        # The date readers see is the newsletter's own, not UTC's.
        edition_date=(edition.scheduled_for or edition.cut_at or utcnow()).astimezone(ZoneInfo(newsletter.timezone)),
        preheader=next((a.lead for a in articles if a.lead), ""),
        web_url=web_url(settings, newsletter, edition),
        archive_url=f"{settings.base_url}/n/{newsletter.slug}",
        subscribe_url=f"{settings.base_url}/",
        unsubscribe_url=UNSUBSCRIBE_URL,
        preferences_url=PREFERENCES_URL,
        postal_address=settings.postal_address,
    )


def render_edition(newsletter: Newsletter, edition: Edition, articles: list[Article],
                   settings: Settings) -> tuple[str, str, str]:
    """Subject, inlined HTML and text; the recipient's own links are placeholders filled per recipient."""
    subject = edition.custom_subject or render_subject(newsletter, edition, articles)
    context = render_context(newsletter, edition, articles, settings, subject)
    html = render(f"email/{newsletter.template}/body.html", **context)
    # Only our own stylesheet is inlined; nothing is ever fetched over the network.
    html = Premailer(html, allow_network=False, allow_loading_external_files=False,
                     remove_classes=False, cssutils_logging_level="CRITICAL").transform()
    text = render(f"email/{newsletter.template}/body.txt", **context)
    return subject, html, text


def public_html(edition: Edition, settings: Settings) -> str:
    """The web view: what subscribers got, without anyone's personal links (the template marks them)."""
    subscribe = f'<a href="{settings.base_url}/">Subscribe</a>'
    html = PERSONAL.sub(subscribe, edition.html)
    return html.replace(UNSUBSCRIBE_URL, f"{settings.base_url}/").replace(PREFERENCES_URL, f"{settings.base_url}/")


PUBLIC = ("sending", "sent")  # editions that have gone out: the only ones the archive shows


def get_edition(session: Session, slug: str, number: int, public: bool = True) -> Edition:
    query = select(Edition).join(Newsletter).where(Newsletter.slug == slug, Edition.number == number)
    if public:
        query = query.where(Edition.status.in_(PUBLIC))
    edition = session.scalar(query)
    if edition is None or not edition.html:
        raise NotFound(f"no edition {number} of {slug!r}")
    return edition
