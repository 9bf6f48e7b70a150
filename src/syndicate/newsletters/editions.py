"""article → edition: schedules, the cut (a frozen list of stories), and the render done once."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cssutils
from cronsim import CronSim, CronSimError
from jinja2 import TemplateError
from lxml import html as lxml_html
from premailer import Premailer
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from syndicate import private_files, templating
from syndicate.config import Settings
from syndicate.errors import InvalidInput, NotFound
from syndicate.models import (
    DEFAULT_SUBJECT,
    Article,
    Delivery,
    Edition,
    EditionArticle,
    Feed,
    Newsletter,
    Subscriber,
    Subscription,
    utcnow,
)
from syndicate.subscribers.consent import normalise_email
from syndicate.templating import one_line, render, sandbox

log = logging.getLogger(__name__)

# ── newsletters and schedules ────────────────────────────────────────────────

FIRST_FILL = re.compile(r"^(none|last:(\d{1,4})|hours:(\d{1,5}))$")
SAMPLE_ARTICLE = Article(title="A headline", url="https://example.com/story", lead="A lead.", categories=["News"],
                         published_at=datetime(2026, 1, 1, tzinfo=UTC))


def check_schedule(cron: str | None, timezone: str) -> None:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise InvalidInput(f"unknown time zone {timezone!r}; use an IANA name like Europe/Berlin") from e
    if cron is None:
        return
    try:
        CronSim(cron, datetime.now(zone))
    except CronSimError as e:
        raise InvalidInput(f"bad cron expression {cron!r}: {e}; e.g. '0 7 * * *' for 07:00 daily") from e


def next_run(cron: str | None, timezone: str, after: datetime) -> datetime | None:
    """The next send time strictly after `after`, computed in local time (DST-correct), as UTC.

    cronsim walks local wall-clock time: 07:00 Europe/Berlin stays 07:00 on both sides of a
    switch, a time that doesn't exist that day (02:30 in spring) runs once at 03:00, and a
    time that happens twice (02:30 in autumn) runs once.
    """
    if cron is None:
        return None
    local = after.astimezone(ZoneInfo(timezone))
    return next(CronSim(cron, local)).astimezone(UTC)


def upcoming(newsletter: Newsletter, n: int = 5, after: datetime | None = None) -> list[datetime]:
    times, at = [], after or utcnow()
    while len(times) < n and (at := next_run(newsletter.cron, newsletter.timezone, at)) is not None:
        times.append(at)
    return times


def check_subject_template(template: str) -> None:
    """Refuse a subject template that can't render, when the editor types it, not at 07:00."""
    newsletter = Newsletter(name="Newsletter", slug="newsletter")
    edition = Edition(number=1)
    try:
        sandbox().from_string(template).render(top=SAMPLE_ARTICLE, rest=2, articles=[SAMPLE_ARTICLE] * 3,
                                               newsletter=newsletter, edition=edition)
    except TemplateError as e:
        raise InvalidInput(f"the subject template doesn't work: {e}; "
                           "e.g. '{{ top.title }} and {{ rest }} more stories'") from e


def check_template(name: str) -> None:
    missing = [f"email/{name}/{part}" for part in ("body.html", "body.txt") if not templating.exists(
        f"email/{name}/{part}")]
    if missing:
        raise InvalidInput(f"no template {', '.join(missing)}; put it in SYNDICATE_TEMPLATE_DIR, "
                           "or use the bundled 'edition'")


def articles_since(session: Session, first_fill: str, now: datetime) -> datetime:
    """Where a new newsletter's first edition starts: now, the last N stories, or the last N hours."""
    match = FIRST_FILL.match(first_fill)
    if match is None:
        raise InvalidInput(f"first fill {first_fill!r} is not understood; use none, last:N (the N newest "
                           "stories) or hours:N (stories of the last N hours)")
    if match.group(2):
        nth = session.scalar(select(Article.first_seen_at).order_by(Article.first_seen_at.desc())
                             .offset(int(match.group(2)) - 1).limit(1)) if int(match.group(2)) else None
        return nth or (session.scalar(select(func.min(Article.first_seen_at))) or now)
    if match.group(3):
        return now - timedelta(hours=int(match.group(3)))
    return now


def _categories(values) -> list[str] | None:
    cleaned = sorted({" ".join(str(v).split()) for v in values or [] if str(v).strip()}, key=str.lower)
    return cleaned or None


NEWSLETTER_FIELDS = ("name", "from_name", "from_address", "reply_to", "subject_template", "template", "cron",
                     "timezone", "max_items", "feed_ids", "categories_include", "categories_exclude",
                     "breaking_categories")


def _apply(session: Session, newsletter: Newsletter, changes: dict, now: datetime) -> None:
    """Validate and set newsletter fields; every way in (CLI, web, tests) goes through here."""
    unknown = set(changes) - set(NEWSLETTER_FIELDS)
    assert not unknown, unknown
    for key in ("from_address", "reply_to"):
        if changes.get(key):
            normalise_email(changes[key])
    for key, what in (("name", "name"), ("from_name", "from-name")):
        if key in changes:
            changes[key] = _one_line_name(changes[key], what)
    if "subject_template" in changes:
        check_subject_template(changes["subject_template"])
    if "template" in changes:
        check_template(changes["template"])
    if "max_items" in changes and not 1 <= int(changes["max_items"]) <= 200:
        raise InvalidInput("max items must be between 1 and 200")
    if changes.get("feed_ids"):
        known = set(session.scalars(select(Feed.id).where(Feed.id.in_(changes["feed_ids"]))))
        if missing := sorted(set(changes["feed_ids"]) - known):
            raise InvalidInput(f"no feed with id {missing}; `syndicate feed list` shows them")
    for key in ("categories_include", "categories_exclude", "breaking_categories"):
        if key in changes:
            changes[key] = _categories(changes[key])
    schedule_changed = {"cron", "timezone"} & set(changes)
    cron = changes.get("cron", newsletter.cron)
    timezone = changes.get("timezone", newsletter.timezone)
    check_schedule(cron, timezone)
    for key, value in changes.items():
        setattr(newsletter, key, value)
    if schedule_changed or newsletter.next_run_at is None:
        newsletter.next_run_at = next_run(cron, timezone, now) if newsletter.status == "active" else None


def _one_line_name(value: str | None, what: str) -> str:
    """A newsletter's name and from-name go into every mail's From and List-Id: one line of text, or refused."""
    value = value or ""
    if not value.isprintable():  # CR, LF, tab and the other control and separator characters
        raise InvalidInput(f"a newsletter's {what} must be one line of text, without line breaks, tabs or other "
                           f"control characters ({value!r}); type it again on one line")
    value = " ".join(value.split())
    if not 1 <= len(value) <= 200:
        raise InvalidInput(f"a newsletter's {what} is 1 to 200 characters, e.g. 'The Morning Briefing'")
    return value


def add_newsletter(session: Session, *, slug: str, name: str, from_address: str, from_name: str | None = None,
                   cron: str | None = "0 7 * * *", timezone: str = "UTC", max_items: int = 20,
                   first_fill: str = "none", now: datetime | None = None, **options) -> Newsletter:
    now = now or utcnow()
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,99}", slug):
        raise InvalidInput(f"{slug!r} can't be a newsletter's short name; use lower-case letters, digits and "
                           "dashes, e.g. morning-briefing")
    if session.scalar(select(Newsletter.id).where(Newsletter.slug == slug)):
        raise InvalidInput(f"a newsletter called {slug!r} already exists")
    newsletter = Newsletter(slug=slug, status="active", first_fill=first_fill, created_at=now,
                            articles_since=articles_since(session, first_fill, now),
                            subject_template=DEFAULT_SUBJECT, template="edition")
    _apply(session, newsletter, dict(name=name, from_address=from_address, from_name=from_name or name,
                                     cron=cron, timezone=timezone, max_items=max_items, **options), now)
    session.add(newsletter)
    session.flush()
    return newsletter


def update_newsletter(session: Session, newsletter: Newsletter, now: datetime | None = None,
                      **changes) -> Newsletter:
    _apply(session, newsletter, changes, now or utcnow())
    session.flush()
    return newsletter


def pause_newsletter(session: Session, newsletter: Newsletter) -> None:
    """No more regular or breaking editions until resumed; editions already scheduled keep theirs."""
    newsletter.status, newsletter.next_run_at = "paused", None


def resume_newsletter(session: Session, newsletter: Newsletter, now: datetime | None = None) -> None:
    """Runs again from the next scheduled time after now: what was missed while paused is not sent in a rush."""
    newsletter.status = "active"
    newsletter.next_run_at = next_run(newsletter.cron, newsletter.timezone, now or utcnow())


def get_newsletter(session: Session, slug: str) -> Newsletter:
    newsletter = session.scalar(select(Newsletter).where(Newsletter.slug == slug))
    if newsletter is None:
        raise NotFound(f"no newsletter {slug!r}; `syndicate newsletter list` shows them")
    return newsletter


# ── choosing the stories ─────────────────────────────────────────────────────


def _wanted(newsletter: Newsletter, article: Article) -> bool:
    categories = {c.casefold() for c in article.categories or []}
    include = {c.casefold() for c in newsletter.categories_include or []}
    exclude = {c.casefold() for c in newsletter.categories_exclude or []}
    return (not include or bool(categories & include)) and not categories & exclude


def is_breaking(newsletter: Newsletter, article: Article) -> bool:
    breaking = {c.casefold() for c in newsletter.breaking_categories or []}
    return bool(breaking & {c.casefold() for c in article.categories or []})


def candidates(session: Session, newsletter: Newsletter) -> list[Article]:
    """Stories not yet in any edition of this newsletter that pass its filters, newest first."""
    already = select(EditionArticle.article_id).where(EditionArticle.newsletter_id == newsletter.id)
    query = select(Article).where(Article.first_seen_at >= newsletter.articles_since, Article.id.not_in(already))
    if newsletter.feed_ids:
        query = query.where(Article.feed_id.in_(newsletter.feed_ids))
    query = query.order_by(Article.published_at.desc(), Article.id.desc())
    # Categories are a JSON list: filtered here, the same way on SQLite and PostgreSQL.
    return [a for a in session.scalars(query) if _wanted(newsletter, a)]


def new_articles(session: Session, newsletter: Newsletter) -> list[Article]:
    """What the next regular edition holds: the newest stories, breaking ones left to their own lane."""
    lane = [a for a in candidates(session, newsletter) if not is_breaking(newsletter, a)]
    return lane[: newsletter.max_items]


# ── editions: create, schedule, start, pause, resume, cancel ────────────────


def _lock(session: Session, newsletter: Newsletter) -> None:
    """One edition is made at a time per newsletter: the second maker waits, then sees the first's stories."""
    # PostgreSQL: a row lock until commit (each later statement sees the first maker's rows).
    # SQLite: BEGIN IMMEDIATE already serialises writers, and FOR UPDATE is left out.
    session.execute(select(Newsletter.id).where(Newsletter.id == newsletter.id).with_for_update())


def create_edition(session: Session, newsletter: Newsletter, settings: Settings, *, now: datetime | None = None,
                   status: str = "draft", kind: str = "regular", scheduled_for: datetime | None = None,
                   articles: list[Article] | None = None) -> Edition:
    """Pick the stories and render them once. With none to send, the edition is recorded as skipped."""
    now = now or utcnow()
    _lock(session, newsletter)
    number = (session.scalar(select(func.max(Edition.number)).where(Edition.newsletter_id == newsletter.id)) or 0) + 1
    chosen = new_articles(session, newsletter) if articles is None else articles
    edition = Edition(newsletter_id=newsletter.id, number=number, kind=kind, cut_at=now, created_at=now,
                      scheduled_for=scheduled_for, status=status, warnings=[])
    session.add(edition)
    if not chosen:
        edition.status, edition.note = "skipped", "no new articles since the last edition"
        session.flush()
        return edition
    session.flush()
    for position, article in enumerate(chosen):
        session.add(EditionArticle(edition_id=edition.id, newsletter_id=newsletter.id,
                                   article_id=article.id, position=position))
    _render_into(edition, newsletter, chosen, settings)
    session.flush()
    return edition


def _render_into(edition: Edition, newsletter: Newsletter, articles: list[Article], settings: Settings) -> None:
    edition.subject, edition.html, edition.text, warnings = _render(newsletter, edition, articles, settings)
    size = len(edition.html.encode())
    if size > GMAIL_CLIPS_AT:
        warnings.append(f"the HTML is {size / 1024:.0f} KB: Gmail clips messages over 102 KB and hides the rest "
                        "(and the unsubscribe link); remove stories or shorten leads")
    edition.warnings = warnings
    for warning in warnings:
        log.warning("%s edition %d: %s", newsletter.slug, edition.number, warning)


def make_now(session: Session, newsletter: Newsletter, settings: Settings, now: datetime | None = None,
             kind: str = "regular") -> Edition:
    """The next edition, scheduled for now (delivery.sending.cut starts it)."""
    now = now or utcnow()
    return create_edition(session, newsletter, settings, now=now, status="scheduled", kind=kind, scheduled_for=now)


EDITABLE = ("draft", "scheduled")  # before the fan-out; a paused edition that never started counts too


def _editable(edition: Edition) -> bool:
    return edition.status in EDITABLE or (edition.status == "paused" and edition.started_at is None)


def move(session: Session, edition: Edition, to: str, allowed: tuple[str, ...], **values) -> None:
    """A conditional status change: it fails with a clear word if someone else changed the edition first."""
    moved = session.execute(
        update(Edition).where(Edition.id == edition.id, Edition.status.in_(allowed))
        .values(status=to, **values).execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:
        session.refresh(edition)
        raise InvalidInput(f"edition #{edition.number} is {edition.status}; it can't become {to} "
                           f"(only from {' or '.join(allowed)})")
    session.refresh(edition)


def schedule(session: Session, edition: Edition, at: datetime) -> None:
    """Schedule or reschedule an edition that hasn't started; a time in the past means at the next tick."""
    if not _editable(edition):
        raise InvalidInput(f"edition #{edition.number} is {edition.status}; only a draft, scheduled or "
                           "paused edition that hasn't started sending can be (re)scheduled")
    if at.tzinfo is None:
        raise InvalidInput("give the time with its zone, e.g. 2026-12-01T07:00+01:00")
    kind = edition.kind if edition.kind == "breaking" else "one-off"
    move(session, edition, "scheduled", ("draft", "scheduled", "paused"), scheduled_for=at.astimezone(UTC),
         kind=kind)


def pause(session: Session, edition: Edition) -> None:
    """Stop before the next recipient: workers claim nothing of a paused edition, and a batch in hand
    stops within a few messages and puts the rest back."""
    move(session, edition, "paused", ("scheduled", "sending"))


def cancel(session: Session, edition: Edition) -> int:
    """Nothing more goes out. Stories never sent to anyone are released for the next edition."""
    move(session, edition, "cancelled", ("draft", "scheduled", "paused", "sending"))
    skipped = session.execute(
        update(Delivery).where(Delivery.edition_id == edition.id, Delivery.status.in_(("pending", "deferred")))
        .values(status="skipped", last_reply="edition cancelled").execution_options(synchronize_session=False)
    ).rowcount
    sent = session.scalar(select(func.count()).select_from(Delivery).where(
        Delivery.edition_id == edition.id, Delivery.status.in_(("sent", "sending"))))
    if not sent:
        session.execute(delete(EditionArticle).where(EditionArticle.edition_id == edition.id))
        edition.note = "cancelled before anyone got it; its stories go into the next edition"
    else:
        edition.note = f"cancelled after {sent} recipients got it"
    session.flush()
    return skipped


def edit(session: Session, edition: Edition, settings: Settings, *, remove: list[int] = (),
         order: list[int] | None = None, subject: str | None = None) -> Edition:
    """Change an edition that hasn't started: drop stories, reorder them, set the subject ("" → the
    template's again). The render is redone; a removed story is free for the next edition."""
    if not _editable(edition):
        raise InvalidInput(f"edition #{edition.number} is {edition.status}: what was sent can't change")
    items = {item.article_id: item for item in edition.items}
    if unknown := [a for a in [*remove, *(order or [])] if a not in items]:
        raise InvalidInput(f"article {unknown} is not in edition #{edition.number}; it has {sorted(items)}")
    for article_id in remove:
        session.delete(items.pop(article_id))
    kept = [a for a in (order or []) if a in items] + [a for a in sorted(items, key=lambda a: items[a].position)
                                                      if a not in (order or [])]
    if not kept:
        raise InvalidInput("an edition needs at least one story; cancel it instead")
    session.flush()
    for position, article_id in enumerate(kept):
        items[article_id].position = position
    if subject is not None:
        edition.custom_subject = one_line(subject)[:300] or None
    session.flush()
    session.expire(edition, ["items"])
    newsletter = session.get(Newsletter, edition.newsletter_id)
    _render_into(edition, newsletter, [items[a].article for a in kept], settings)
    session.flush()
    return edition


def prepare_next(session: Session, newsletter: Newsletter, settings: Settings, now: datetime | None = None
                 ) -> Edition:
    """Make the next regular edition now, scheduled for the newsletter's next run, so an editor can
    preview and edit it before it goes. Stories arriving until then wait for the one after."""
    now = now or utcnow()
    if newsletter.next_run_at is None:
        raise InvalidInput(f"{newsletter.slug} has no next run (no schedule, or paused)")
    existing = session.scalar(select(Edition).where(
        Edition.newsletter_id == newsletter.id, Edition.kind == "regular",
        Edition.scheduled_for == newsletter.next_run_at, Edition.status.in_(("scheduled", "paused")))
        .order_by(Edition.id.desc()).limit(1))
    if existing is not None:
        return existing
    return create_edition(session, newsletter, settings, now=now, status="scheduled",
                          scheduled_for=newsletter.next_run_at)


# ── what the beat tick does ──────────────────────────────────────────────────


def due_newsletter_ids(session: Session, now: datetime) -> list[int]:
    return list(session.scalars(
        select(Newsletter.id).where(Newsletter.status == "active", Newsletter.next_run_at <= now)
    ))


def claim(session: Session, newsletter_id: int, now: datetime) -> datetime | None:
    """Claim a due run by moving the newsletter's next run forward; the slot claimed, or None.

    The conditional UPDATE is the lock: a second beat tick or worker finds the row
    already moved and gets nothing. The next run is computed from now, so a scheduler
    that was down catches up once, not once per missed tick.
    """
    newsletter = session.get(Newsletter, newsletter_id)
    due = newsletter is not None and newsletter.status == "active" and newsletter.next_run_at is not None
    if not due or newsletter.next_run_at > now:
        return None
    slot = newsletter.next_run_at
    moved = session.execute(
        update(Newsletter)
        .where(Newsletter.id == newsletter.id, Newsletter.next_run_at == slot)
        .values(next_run_at=next_run(newsletter.cron, newsletter.timezone, now))
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:
        return None
    session.refresh(newsletter)
    return slot


def regular_edition(session: Session, newsletter_id: int, settings: Settings, now: datetime
                    ) -> tuple[Edition, bool] | None:
    """A due run, claimed: the edition an editor prepared for this slot (it starts with the other
    scheduled editions, or was paused or cancelled by its editor), or a new cut to start now; None when
    the run isn't due or another tick claimed it. The edition, and whether to start it now."""
    slot = claim(session, newsletter_id, now)
    if slot is None:
        return None
    prepared = session.scalar(select(Edition).where(
        Edition.newsletter_id == newsletter_id, Edition.kind == "regular", Edition.scheduled_for == slot,
        Edition.status != "skipped").order_by(Edition.id.desc()).limit(1))
    if prepared is not None:
        return prepared, False
    return make_now(session, session.get(Newsletter, newsletter_id), settings, now), True


def breaking_editions(session: Session, newsletter: Newsletter, settings: Settings, now: datetime) -> list[Edition]:
    """Each new story in a breaking category, an edition of its own, to start at once."""
    _lock(session, newsletter)
    return [create_edition(session, newsletter, settings, now=now, status="scheduled", kind="breaking",
                           scheduled_for=now, articles=[article])
            for article in reversed([a for a in candidates(session, newsletter) if is_breaking(newsletter, a)])]


def breaking_newsletter_ids(session: Session) -> list[int]:
    return [n.id for n in session.scalars(select(Newsletter).where(Newsletter.status == "active"))
            if n.breaking_categories]


def due_edition_ids(session: Session, now: datetime) -> list[int]:
    return list(session.scalars(select(Edition.id).where(Edition.status == "scheduled",
                                                         Edition.scheduled_for <= now).order_by(Edition.id)))


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


# Rendered into every edition once; replaced per recipient by their own signed links (delivery).
UNSUBSCRIBE_URL = "https://syndicate.invalid/unsubscribe-url"
PREFERENCES_URL = "https://syndicate.invalid/preferences-url"
PUBLIC_ONLY = re.compile(r"<!--public-->.*?<!--/public-->", re.S)  # lines only the public web view shows
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


class _Offline(Premailer):
    """premailer that loads no stylesheet from anywhere. allow_network=False keeps it off <link> tags, but
    not cssutils, which follows every @import (network, file:// and paths next to the working directory,
    with no timeout) through its own default fetcher: each sheet is parsed here with a fetcher that
    refuses and writes down what was asked for, so the render can say what it left out."""

    def __init__(self, html: str):
        super().__init__(html, allow_network=False, allow_loading_external_files=False, remove_classes=False,
                         cache_css_parsing=False, cssutils_logging_level="CRITICAL")
        self.refused: list[str] = []

    def _refuse(self, url: str) -> None:
        self.refused.append(url)  # None to cssutils means "could not be read": it drops the @import, parses on

    def _parse_css_string(self, css_body, validate=True):
        return cssutils.CSSParser(fetcher=self._refuse, validate=validate).parseString(css_body)


def inline_css(html: str) -> tuple[str, list[str]]:
    """The HTML with its own <style> rules inlined, and the stylesheets it named that were not loaded
    (neither a <link> nor an @import is ever read: a render touches no network and no file)."""
    inliner = _Offline(html)
    inlined = inliner.transform()
    links = lxml_html.fromstring(html).xpath(
        "//link[contains(concat(' ', normalize-space(@rel), ' '), ' stylesheet ')]/@href")
    return inlined, [*links, *inliner.refused]


def render_edition(newsletter: Newsletter, edition: Edition, articles: list[Article],
                   settings: Settings) -> tuple[str, str, str]:
    """Subject, inlined HTML and text; the recipient's own links are placeholders filled per recipient."""
    subject, html, text, _ = _render(newsletter, edition, articles, settings)
    return subject, html, text


def _render(newsletter: Newsletter, edition: Edition, articles: list[Article],
            settings: Settings) -> tuple[str, str, str, list[str]]:
    """render_edition, and what the editor should hear about it (stylesheets left out)."""
    subject = edition.custom_subject or render_subject(newsletter, edition, articles)
    context = render_context(newsletter, edition, articles, settings, subject)
    html, not_loaded = inline_css(render(f"email/{newsletter.template}/body.html", **context))
    text = render(f"email/{newsletter.template}/body.txt", **context)
    notes = [f"the template's stylesheet {url} was not loaded: an edition is rendered without reading "
             f"anything from the network or from files; put its rules in a <style> in email/"
             f"{newsletter.template}/body.html" for url in dict.fromkeys(not_loaded)]
    return subject, html, text, notes


def public_html(edition: Edition, settings: Settings) -> str:
    """The web view: what subscribers got, without anyone's personal links (the template marks them)."""
    html = PERSONAL.sub("", edition.html).replace("<!--public-->", "").replace("<!--/public-->", "")
    return html.replace(UNSUBSCRIBE_URL, f"{settings.base_url}/").replace(PREFERENCES_URL, f"{settings.base_url}/")


def mail_html(html: str) -> str:
    """The edition's HTML as mailed: without the lines meant for the public web view."""
    return PUBLIC_ONLY.sub("", html)


def write_preview(settings: Settings, edition: Edition, folder: Path | None = None) -> tuple[Path, Path]:
    """The HTML and text parts as a recipient will see them, as files (the personal links point to the
    archive instead of anyone's unsubscribe page). Returns their paths."""
    folder = folder or settings.outbox / "editions"
    private_files.make_dir(folder)
    newsletter = edition.newsletter
    archive = f"{settings.base_url}/n/{newsletter.slug}"
    stem = f"{newsletter.slug}-{edition.number}"
    paths = folder / f"{stem}.html", folder / f"{stem}.txt"
    for path, body in zip(paths, (mail_html(edition.html), edition.text), strict=True):
        body = body.replace(UNSUBSCRIBE_URL, archive).replace(PREFERENCES_URL, archive)
        tmp = path.with_suffix(".tmp")
        private_files.write(tmp, body.encode())
        tmp.replace(path)
    return paths


PUBLIC = ("sending", "sent")  # editions that have gone out: the only ones the archive shows


def get_edition(session: Session, slug: str, number: int, public: bool = True) -> Edition:
    query = select(Edition).join(Newsletter).where(Newsletter.slug == slug, Edition.number == number)
    if public:
        query = query.where(Edition.status.in_(PUBLIC))
    edition = session.scalar(query)
    if edition is None or not edition.html:
        raise NotFound(f"no edition {number} of {slug!r}")
    return edition


# ── a newsletter as the desk shows it: its schedule in words, whom it reaches ─


def explain_schedule(cron: str | None, timezone: str) -> str:
    """A schedule in plain words, e.g. "At 07:00 on Monday through Friday, Europe/Berlin time"."""
    check_schedule(cron, timezone)
    if cron is None:
        return "No regular editions: only one-off and breaking ones"
    return f"{CronSim(cron, datetime.now(UTC)).explain()}, {timezone} time"


def audience(session: Session) -> dict[int, int]:
    """Per newsletter id, how many the next edition would go to: confirmed subscribers with an active
    subscription, counted as fan_out picks them. A newsletter nobody gets is missing (0)."""
    rows = session.execute(
        select(Subscription.newsletter_id, func.count()).join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(Subscription.status == "active", Subscriber.status == "confirmed")
        .group_by(Subscription.newsletter_id))
    return dict(rows.all())


def can_edit(edition: Edition) -> bool:
    """Whether its stories, subject and time may still change: it hasn't started going out."""
    return _editable(edition)
