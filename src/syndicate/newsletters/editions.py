"""article → edition: the cut (a frozen list of stories, rendered once), and an edition's life: scheduled,
started, paused, cancelled; the regular and breaking lanes that make them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from syndicate import links
from syndicate.config import Settings
from syndicate.errors import InvalidInput, NotFound
from syndicate.ledger import MAIL_UNCLAIMED
from syndicate.models import (
    Article,
    Delivery,
    Edition,
    EditionArticle,
    Newsletter,
    utcnow,
)
from syndicate.newsletters import clicks, notes, rendering, schedules, stored
from syndicate.text import one_line

log = logging.getLogger(__name__)

# ── choosing the stories ─────────────────────────────────────────────────────


def _wanted(newsletter: Newsletter, article: Article) -> bool:
    """The category filters. A breaking category always counts as included (a story filed only under
    "Breaking" still reaches a newsletter that takes only "Local"); an excluded category keeps a story out,
    whatever else it is filed under."""
    categories = {c.casefold() for c in article.categories or []}
    include = {c.casefold() for c in newsletter.categories_include or []}
    breaking = {c.casefold() for c in newsletter.breaking_categories or []}
    exclude = {c.casefold() for c in newsletter.categories_exclude or []}
    return (not include or bool(categories & (include | breaking))) and not categories & exclude


def is_breaking(newsletter: Newsletter, article: Article) -> bool:
    breaking = {c.casefold() for c in newsletter.breaking_categories or []}
    return bool(breaking & {c.casefold() for c in article.categories or []})


def _unsent(session: Session, newsletter: Newsletter):
    """Stories not yet in any edition of this newsletter, from its feeds; never a withdrawn one."""
    already = select(EditionArticle.article_id).where(EditionArticle.newsletter_id == newsletter.id)
    query = select(Article).where(Article.first_seen_at >= newsletter.articles_since, Article.id.not_in(already),
                                  Article.withdrawn_at.is_(None))
    if newsletter.feed_ids:
        query = query.where(Article.feed_id.in_(newsletter.feed_ids))
    return query


def oldest_wanted(newsletter: Newsletter, now: datetime) -> datetime | None:
    """A story published before this is too old for the newsletter (None: any age will do)."""
    return now - timedelta(hours=newsletter.max_age_hours) if newsletter.max_age_hours else None


def candidates(session: Session, newsletter: Newsletter, now: datetime | None = None) -> list[Article]:
    """Stories not yet in any edition of this newsletter that pass its filters and aren't older than its
    max age, newest first; never a withdrawn one."""
    query = _unsent(session, newsletter)
    if (oldest := oldest_wanted(newsletter, now or utcnow())) is not None:
        query = query.where(Article.published_at >= oldest)
    query = query.order_by(Article.published_at.desc(), Article.id.desc())
    # Categories are a JSON list: filtered here, the same way on SQLite and PostgreSQL.
    return [a for a in session.scalars(query) if _wanted(newsletter, a)]


def left_out_for_age(session: Session, newsletter: Newsletter, now: datetime) -> int:
    """Stories the cut at `now` leaves out for their age, each counted at the one cut that first left it
    out: it came in since the last cut already too old, or grew too old since (left over past max-items)."""
    if (oldest := oldest_wanted(newsletter, now)) is None:
        return 0
    query = _unsent(session, newsletter).where(Article.published_at < oldest)
    last = session.scalar(select(func.max(Edition.cut_at)).where(Edition.newsletter_id == newsletter.id))
    if last is not None:
        query = query.where(or_(Article.first_seen_at > last,
                                Article.published_at >= oldest_wanted(newsletter, last)))
    return sum(1 for a in session.scalars(query) if _wanted(newsletter, a) and not is_breaking(newsletter, a))


def new_articles(session: Session, newsletter: Newsletter, now: datetime | None = None) -> list[Article]:
    """What the next regular edition holds: the newest stories, breaking ones left to their own lane."""
    lane = [a for a in candidates(session, newsletter, now) if not is_breaking(newsletter, a)]
    return lane[: newsletter.max_items]


# ── editions: create, schedule, start, pause, resume, cancel ────────────────


def _lock(session: Session, newsletter: Newsletter) -> None:
    """One edition is made at a time per newsletter: the second maker waits, then sees the first's stories."""
    # PostgreSQL: a row lock until commit (each later statement sees the first maker's rows).
    # SQLite: BEGIN IMMEDIATE already serialises writers, and FOR UPDATE is left out.
    session.execute(select(Newsletter.id).where(Newsletter.id == newsletter.id).with_for_update())


def create_edition(session: Session, newsletter: Newsletter, settings: Settings, *, now: datetime | None = None,
                   status: str = "draft", kind: str = "regular", scheduled_for: datetime | None = None,
                   articles: list[Article] | None = None, slot: datetime | None = None) -> Edition:
    """Pick the stories and render them once. With none to send, the edition is recorded as skipped.
    `slot`: the regular run it stands for."""
    now = now or utcnow()
    _lock(session, newsletter)
    number = (stored.last_edition_number(session, newsletter) or 0) + 1
    aged = left_out_for_age(session, newsletter, now) if articles is None else 0
    chosen = new_articles(session, newsletter, now) if articles is None else articles
    edition = Edition(newsletter_id=newsletter.id, number=number, kind=kind, cut_at=now, created_at=now,
                      scheduled_for=scheduled_for, slot=slot, status=status, warnings=[], left_out_for_age=aged)
    session.add(edition)
    if not chosen:
        edition.status, edition.note = "skipped", "no new articles since the last edition" + (
            f" ({aged} older than {newsletter.max_age_hours} hours left out)" if aged else "")
        session.flush()
        return edition
    session.flush()
    for position, article in enumerate(chosen):
        session.add(EditionArticle(edition_id=edition.id, newsletter_id=newsletter.id,
                                   article_id=article.id, position=position))
    _render_into(session, edition, newsletter, chosen, settings)
    session.flush()
    return edition


def _render_into(session: Session, edition: Edition, newsletter: Newsletter, articles: list[Article],
                 settings: Settings, blurbs: dict[int, str | None] | None = None) -> None:
    # Counted links are made here, in the one render every reader's copy is made from.
    shown = clicks.counted(session, settings, edition, articles) if newsletter.count_clicks else None
    edition.subject, edition.html, edition.text, warnings = rendering.render_with_notes(
        newsletter, edition, articles, settings, shown, blurbs)
    size = len(edition.html.encode())
    if size > rendering.GMAIL_CLIPS_AT:
        warnings.append(f"the HTML is {size / 1024:.0f} KB: Gmail clips messages over 102 KB and hides the rest "
                        "(and the unsubscribe link); remove stories or shorten leads")
    edition.warnings = warnings
    for warning in warnings:
        log.warning("%s edition %d: %s", newsletter.slug, edition.number, warning)


def make_now(session: Session, newsletter: Newsletter, settings: Settings, now: datetime | None = None,
             kind: str = "regular", slot: datetime | None = None) -> Edition:
    """The next edition, scheduled for now (delivery.sending.cut starts it)."""
    now = now or utcnow()
    return create_edition(session, newsletter, settings, now=now, status="scheduled", kind=kind, scheduled_for=now,
                          slot=slot)


EDITABLE = ("draft", "scheduled")  # before the fan-out; a paused edition that never started counts too


def _editable(edition: Edition) -> bool:
    # A blocked edition never started: it waits for its editor to fix it or let a check pass.
    return edition.status in (*EDITABLE, "blocked") or (edition.status == "paused" and edition.started_at is None)


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


def schedule(session: Session, edition: Edition, at: datetime, now: datetime | None = None) -> None:
    """Schedule or reschedule an edition that hasn't started, at a time still ahead.

    An edition prepared for a regular run stays that run's edition at its new time: the run finds it and
    makes no other (two mails that morning otherwise). Any other becomes a one-off; breaking stays breaking."""
    if not _editable(edition):
        raise InvalidInput(f"edition #{edition.number} is {edition.status}; only a draft, scheduled, blocked or "
                           "paused edition that hasn't started sending can be (re)scheduled")
    schedules.check_time(at, now)
    kind = edition.kind if edition.kind == "breaking" or edition.slot is not None else "one-off"
    move(session, edition, "scheduled", ("draft", "scheduled", "paused", "blocked"),
         scheduled_for=at.astimezone(UTC), kind=kind, note=None)


def pause(session: Session, edition: Edition) -> None:
    """Stop before the next recipient: workers claim nothing of a paused edition, and a batch in hand
    stops within a few messages and puts the rest back."""
    move(session, edition, "paused", ("scheduled", "sending"))


def cancel(session: Session, edition: Edition) -> int:
    """Nothing more goes out. Stories never sent to anyone are released for the next edition."""
    move(session, edition, "cancelled", ("draft", "scheduled", "paused", "sending", "blocked"))
    skipped = session.execute(
        update(Delivery).where(Delivery.edition_id == edition.id, Delivery.status.in_(MAIL_UNCLAIMED))
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


INTRO_LIMIT, BLURB_LIMIT, SPONSOR_LIMIT = 5000, 2000, 300  # characters: a note, not a second newsletter


def edit(session: Session, edition: Edition, settings: Settings, *, remove: list[int] = (),
         order: list[int] | None = None, subject: str | None = None, add: list[int] = (),
         intro: str | None = None, blurbs: dict[int, str] | None = None, sponsor_text: str | None = None,
         sponsor_url: str | None = None) -> Edition:
    """Change an edition that hasn't started: add stories (at the end) and drop some, reorder them, set the
    subject ("" → the template's again), the intro, a blurb per story and a sponsor block (Markdown for the
    intro and blurbs; "" takes one away; None leaves it). It is rendered again once, with everything; a
    removed story is free for the next edition."""
    if not _editable(edition):
        raise InvalidInput(f"edition #{edition.number} is {edition.status}: what was sent can't change")
    items = {item.article_id: item for item in edition.items}
    for article_id in dict.fromkeys(add):
        if article_id not in items:
            items[article_id] = _add_story(session, edition, article_id, position=len(items))
    if unknown := [a for a in [*remove, *(order or []), *(blurbs or {})] if a not in items]:
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
    for article_id, blurb in (blurbs or {}).items():
        items[article_id].blurb = notes.cleaned(blurb, BLURB_LIMIT, f"blurb of article {article_id}")
    if subject is not None:
        edition.custom_subject = one_line(subject)[:300] or None
    if intro is not None:
        edition.intro = notes.cleaned(intro, INTRO_LIMIT, "intro")
    _sponsor(edition, sponsor_text, sponsor_url)
    session.flush()
    session.expire(edition, ["items"])
    newsletter = session.get(Newsletter, edition.newsletter_id)
    _render_into(session, edition, newsletter, [items[a].article for a in kept], settings,
                 {a: items[a].blurb for a in kept})
    session.flush()
    return edition


def _add_story(session: Session, edition: Edition, article_id: int, position: int) -> EditionArticle:
    """A story an editor picked, whatever the newsletter's filters say: never a withdrawn one, and never one
    that is in another edition of this newsletter (a reader would get it twice)."""
    article = session.get(Article, article_id)
    if article is None:
        raise InvalidInput(f"no article {article_id}; `syndicate article list --search WORDS` finds one")
    if article.withdrawn_at is not None:
        raise InvalidInput(f"article {article_id} was withdrawn; it goes in no edition")
    other = session.execute(select(Edition.number, Edition.status).join(
        EditionArticle, EditionArticle.edition_id == Edition.id).where(
        EditionArticle.newsletter_id == edition.newsletter_id, EditionArticle.article_id == article_id)).first()
    if other is not None:
        raise InvalidInput(f"article {article_id} is in edition #{other.number} ({other.status}) already; a story "
                           f"goes in one edition of a newsletter (take it out of #{other.number} first)")
    item = EditionArticle(edition_id=edition.id, newsletter_id=edition.newsletter_id, article_id=article_id,
                          position=position)
    session.add(item)
    return item


def _sponsor(edition: Edition, text: str | None, url: str | None) -> None:
    """The sponsor block: its text (one paragraph, shown as typed) and, if given, its link (a web address)."""
    if text is not None:
        edition.sponsor_text = one_line(text) or None
        if len(edition.sponsor_text or "") > SPONSOR_LIMIT:
            raise InvalidInput(f"the sponsor's text is {len(edition.sponsor_text):,} characters; keep it to "
                               f"{SPONSOR_LIMIT}")
    if url is not None:
        edition.sponsor_url = links.web_link(url) if url.strip() else None
    if text is not None and not text.strip() and url is None:
        edition.sponsor_url = None  # the block cleared: its link goes with it
    if edition.sponsor_url and not edition.sponsor_text:
        raise InvalidInput("a sponsor's link needs the sponsor's text too: give both, or clear the link")


def prepare_next(session: Session, newsletter: Newsletter, settings: Settings, now: datetime | None = None
                 ) -> Edition:
    """Make the next regular edition now, scheduled for the newsletter's next run, so an editor can
    preview and edit it before it goes. Stories arriving until then wait for the one after."""
    now = now or utcnow()
    if newsletter.next_run_at is None:
        raise InvalidInput(f"{newsletter.slug} has no next run (no schedule, or paused)")
    existing = session.scalar(select(Edition).where(
        Edition.newsletter_id == newsletter.id, Edition.slot == newsletter.next_run_at,
        Edition.status.in_(("scheduled", "paused"))).order_by(Edition.id.desc()).limit(1))
    if existing is not None:
        return existing
    return create_edition(session, newsletter, settings, now=now, status="scheduled",
                          scheduled_for=newsletter.next_run_at, slot=newsletter.next_run_at)


def withdraw(session: Session, article: Article, settings: Settings) -> tuple[list[dict], list[str]]:
    """A story withdrawn: taken out of every edition that hasn't started going out (re-rendered without it;
    one that held nothing else is cancelled). Returns the editions that did go out with it — their mails
    can't be recalled, and the editor should hear which — and what became of those yet to go."""
    rows = session.execute(
        select(Edition, Newsletter).join(EditionArticle, EditionArticle.edition_id == Edition.id)
        .join(Newsletter, Newsletter.id == Edition.newsletter_id)
        .where(EditionArticle.article_id == article.id).order_by(Edition.id)).all()
    mailed, unsent = [], []
    for edition, newsletter in rows:
        name = f"{newsletter.name} #{edition.number} ({edition.status})"
        if _editable(edition):
            if len(edition.items) > 1:
                edit(session, edition, settings, remove=[article.id])
                unsent.append(f"{name}: taken out, the rest of it goes as planned")
            else:
                cancel(session, edition)
                unsent.append(f"{name}: it held only this story, so it is cancelled")
            continue
        got_it = session.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.edition_id == edition.id, Delivery.status == "sent"))
        if edition.status in ("cancelled", "skipped") and not got_it:
            continue
        mailed.append(dict(newsletter=newsletter.name, slug=newsletter.slug, number=edition.number,
                           status=edition.status, readers=got_it, sent_at=edition.sent_at or edition.started_at))
    return mailed, unsent


# ── what the beat tick does ──────────────────────────────────────────────────


def due_newsletter_ids(session: Session, now: datetime) -> list[int]:
    """Newsletters whose next regular run is due; a local-time one's as soon as its first reader's zone
    reaches the slot's wall-clock time (up to a day before the newsletter's own)."""
    due = session.scalars(select(Newsletter).where(
        Newsletter.status == "active",
        or_(Newsletter.next_run_at <= now,
            and_(Newsletter.local_time, Newsletter.next_run_at <= now + schedules.WIDEST))).order_by(Newsletter.id))
    return [n.id for n in due if schedules.starts_at(session, n) <= now]


def claim(session: Session, newsletter_id: int, now: datetime) -> datetime | None:
    """Claim a due run by moving the newsletter's next run forward; the slot claimed, or None.

    The conditional UPDATE is the lock: a second beat tick or worker finds the row
    already moved and gets nothing. The next run is computed from now, so a scheduler
    that was down catches up once, not once per missed tick.
    """
    newsletter = session.get(Newsletter, newsletter_id)
    due = newsletter is not None and newsletter.status == "active" and newsletter.next_run_at is not None
    if not due or schedules.starts_at(session, newsletter) > now:
        return None
    slot = newsletter.next_run_at
    moved = session.execute(
        update(Newsletter)
        .where(Newsletter.id == newsletter.id, Newsletter.next_run_at == slot)
        # A local-time run is claimed before its slot in the newsletter's zone: the next is after the slot.
        .values(next_run_at=schedules.next_run(newsletter.cron, newsletter.timezone, max(now, slot)))
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:
        return None
    session.refresh(newsletter)
    return slot


def regular_edition(session: Session, newsletter_id: int, settings: Settings, now: datetime
                    ) -> tuple[Edition, bool] | None:
    """A due run, claimed: the edition an editor prepared for this slot (it starts with the other
    scheduled editions at its time, even one rescheduled away from the slot, or was paused or cancelled by
    its editor), or a new cut to start now; None when
    the run isn't due or another tick claimed it. The edition, and whether to start it now."""
    slot = claim(session, newsletter_id, now)
    if slot is None:
        return None
    prepared = session.scalar(select(Edition).where(
        Edition.newsletter_id == newsletter_id, Edition.slot == slot, Edition.status != "skipped")
        .order_by(Edition.id.desc()).limit(1))
    if prepared is not None:
        # At each reader's local time, the slot's first reader comes before the newsletter's own clock: the
        # prepared edition starts with the run (an editor's other time for it still holds).
        newsletter = session.get(Newsletter, newsletter_id)
        return prepared, bool(newsletter.local_time and prepared.status == "scheduled"
                              and prepared.scheduled_for == slot)
    return make_now(session, session.get(Newsletter, newsletter_id), settings, now, slot=slot), True


def breaking_editions(session: Session, newsletter: Newsletter, settings: Settings, now: datetime) -> list[Edition]:
    """Each new story in a breaking category, an edition of its own, to start at once."""
    _lock(session, newsletter)
    return [create_edition(session, newsletter, settings, now=now, status="scheduled", kind="breaking",
                           scheduled_for=now, articles=[article])
            for article in reversed([a for a in candidates(session, newsletter, now) if is_breaking(newsletter, a)])]


def breaking_now(session: Session, newsletter: Newsletter, article_id: int, settings: Settings,
                 now: datetime | None = None) -> tuple[Edition, list[str]]:
    """An editor's "send as breaking now": any story (whatever the filters say) as an edition of its own,
    scheduled for now. A story waiting in an edition yet to go is taken out of it first (that edition is
    cancelled if it held nothing else); one that went out in this newsletter already is refused. Returns the
    edition and what became of the edition it was taken from."""
    now = now or utcnow()
    _lock(session, newsletter)
    article = session.get(Article, article_id)
    if article is None:
        raise InvalidInput(f"no article {article_id}; `syndicate article list --search WORDS` finds one")
    if article.withdrawn_at is not None:
        raise InvalidInput(f"article {article_id} was withdrawn; it goes out nowhere")
    moved = []
    for edition in session.scalars(select(Edition).join(EditionArticle, EditionArticle.edition_id == Edition.id)
                                   .where(EditionArticle.newsletter_id == newsletter.id,
                                          EditionArticle.article_id == article_id)):
        name = f"{newsletter.slug}/{edition.number}"
        if not _editable(edition):
            raise InvalidInput(f"article {article_id} is in {name} ({edition.status}) already: its readers have "
                               "it, or are getting it now")
        if len(edition.items) > 1:
            edit(session, edition, settings, remove=[article_id])
            moved.append(f"{name}: taken out of it, the rest of it goes as planned")
        else:
            cancel(session, edition)
            moved.append(f"{name}: it held only this story, so it is cancelled")
    session.flush()
    made = create_edition(session, newsletter, settings, now=now, status="scheduled", kind="breaking",
                          scheduled_for=now, articles=[article])
    return made, moved


def breaking_newsletter_ids(session: Session) -> list[int]:
    return [n.id for n in session.scalars(select(Newsletter).where(Newsletter.status == "active"))
            if n.breaking_categories]


def due_edition_ids(session: Session, now: datetime) -> list[int]:
    return list(session.scalars(select(Edition.id).where(Edition.status == "scheduled",
                                                         Edition.scheduled_for <= now).order_by(Edition.id)))


# ── the archive's editions ───────────────────────────────────────────────────

PUBLIC = ("sending", "sent")  # editions that have gone out: the only ones the archive shows


def get_edition(session: Session, slug: str, number: int, public: bool = True) -> Edition:
    query = select(Edition).join(Newsletter).where(Newsletter.slug == slug, Edition.number == number)
    if public:
        query = query.where(Edition.status.in_(PUBLIC))
    edition = session.scalar(query)
    if edition is None or not edition.html:
        raise NotFound(f"no edition {number} of {slug!r}")
    return edition


def can_edit(edition: Edition) -> bool:
    """Whether its stories, subject and time may still change: it hasn't started going out."""
    return _editable(edition)
