"""Each reader's stories at the fan-out: their topics, their frequency, and what they missed.

A reader's **cursor** (Subscription.cursor_edition_id) is the last edition of the newsletter whose stories
reached them. It moves forwards with a delivery's "sent", or here, past an edition that had nothing for
them. So the stories of an edition whose mail failed, or that a digest reader wasn't due for, come with
their next mail that goes out — once: after that mail is sent, the cursor is past them. It moves back
once only: when a mail still being retried as a later edition's mail went out (so its stories weren't
carried into that one) is given up on, in the commit that records the failure — to the edition before
it, so the next mail carries its stories.

A "sent" moves the cursor in a **fold** (`fold`), not in the commit that records it: the batch moves
its readers' cursors in one statement once it is done (delivery.batches). Moving each in the "sent"'s
own commit was a second table written per message, on the path between the server's reply and the next
message. A fold changes nothing the second time, so what comes late is folded again before it counts: a
cut folds its newsletter's editions still going out, and an edition is folded whole as it closes (what a
killed worker's batch left). A fold that comes after a move back must not undo it: the move back keeps
its moment (Subscription.cursor_back_at, in editions' time), and only an edition started after it — one
whose fan-out saw the failure, and so carried the stories — moves the cursor forwards again.

At an edition's fan-out, a reader's stories are this edition's, then those of the editions started after
their cursor (newest first) that didn't reach them — none with a delivery of theirs still on its way
(pending, sending, deferred: it may yet arrive) — each kept if one of its categories is among the
reader's topics (no topics: every story), at most the newsletter's max_items, the rest counted as
"N more stories on the web". A reader with no cursor yet counts from when they subscribed; with the
newsletter's welcome digest on, the last edition started before that comes too (their first mail
carries it: never twice, since the cursor passes it with that mail).

Frequency, in the reader's terms: "each" gets every edition; "daily" at most one mail a day (the first
edition that starts at least 20 hours after the one their last mail came with); "weekly" at most one
a week (6½ days). Counted in hours, not calendar days, so a change of clocks (DST) or a cron a little
early never skips a day. A reader not due gets no row, and their cursor stays.

Most readers get exactly the edition's own stories: every topic, every edition, and their cursor at the
edition started just before (or none, having joined since). They are decided in SQL, in the one
INSERT … SELECT the fan-out always was, with no variant (the edition's own render). Only the others are
read here, grouped by story set, and each distinct set is rendered once, as an EditionVariant, with the
edition's own rendering code.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Integer, and_, any_, bindparam, case, func, insert, literal, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from syndicate.config import Settings
from syndicate.delivery import waves
from syndicate.ledger import MAIL_OPEN
from syndicate.models import (
    Article,
    Delivery,
    Edition,
    EditionArticle,
    EditionLink,
    EditionVariant,
    Newsletter,
    Subscriber,
    Subscription,
    UTCDateTime,
    utcnow,
)

log = logging.getLogger(__name__)

DUE_AFTER = {"each": timedelta(0), "daily": timedelta(hours=20), "weekly": timedelta(days=6, hours=12)}
CARRY_DAYS = 35  # stories of editions started longer ago than this are not carried any more


@dataclass
class Story:
    id: int
    categories: frozenset[str]  # casefolded


@dataclass
class Started:
    """An edition of the newsletter that went out (or is going out), with its stories in its order."""
    id: int
    started_at: datetime
    stories: list[Story]


def previous(session: Session, edition: Edition) -> Edition | None:
    """The edition of the newsletter started last before this one."""
    return session.scalars(
        select(Edition).where(Edition.newsletter_id == edition.newsletter_id, Edition.id != edition.id,
                              Edition.started_at.is_not(None), Edition.started_at <= edition.started_at)
        .order_by(Edition.started_at.desc(), Edition.id.desc()).limit(1)).first()


FAN_OUT_SLICE = 50_000  # recipients per INSERT … SELECT: a progress step, in the one transaction of the cut


def insert_recipients(session: Session, edition: Edition, settings: Settings, now: datetime,
                      progress: Callable[[int, int], object] | None = None) -> dict[str, int]:
    """The edition's delivery rows, one per reader confirmed and subscribed now who is due and has a story
    in it: most in INSERT … SELECT slices of FAN_OUT_SLICE readers by subscriber id with the edition's own
    render (a million readers report `progress(done, total)` as they go), the rest with their own story
    set's variant. Returns how many readers went which way (for the log and the tests)."""
    newsletter = edition.newsletter
    fold_open(session, newsletter.id)  # the cursors, as they stand
    before = previous(session, edition)
    active = and_(Subscription.newsletter_id == edition.newsletter_id, Subscription.status == "active",
                  Subscriber.status == "confirmed")
    # The common case: every story, every edition, and nothing missed.
    if before is None:
        up_to_date = literal(True)  # the first edition: nothing before it to miss
    else:
        # coalesce: a NULL cursor must make this false, not unknown (NOT unknown would leave the reader out
        # of both the statement and the rest)
        up_to_date = func.coalesce(Subscription.cursor_edition_id, 0) == before.id
        if not newsletter.welcome_digest:  # joined since the last edition started: nothing missed either
            up_to_date = or_(up_to_date, and_(Subscription.cursor_edition_id.is_(None),
                                              Subscription.created_at > before.started_at))
    common = and_(Subscription.topics.is_(None), Subscription.frequency == "each", up_to_date)
    # At each reader's local time: the rows of readers whose moment is still ahead wait for it (delivery.waves).
    ahead = waves.later(session, edition, newsletter, now)
    status, next_attempt_at = waves.columns(newsletter, ahead, now)
    recipients = (
        select(literal(edition.id).label("edition_id"), Subscriber.id.label("subscriber_id"),
               status.label("status"), literal(0).label("attempts"), literal(now, UTCDateTime()).label("created_at"),
               next_attempt_at.label("next_attempt_at"))
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(active, common)
        .order_by(Subscriber.id)
    )
    plain = _insert_in_slices(session, recipients, progress)
    others = session.execute(
        select(Subscription.id, Subscriber.id, Subscription.topics, Subscription.frequency,
               Subscription.cursor_edition_id, Subscription.created_at, waves.reader_zone(newsletter))
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(active, ~common).order_by(Subscriber.id)).all()
    counted = dict(common=plain, own=0, variant=0, not_due=0, nothing=0, variants=0)
    if not others:
        return counted
    sets = _story_sets(session, edition, others, now)
    rows, caught_up, variants = [], [], {}
    own = [s.id for s in sets.this.stories]
    zones = {row[1]: row[6] for row in others}
    for subscription_id, subscriber_id, chosen in sets.each:
        if chosen is None:
            counted["not_due"] += 1
        elif not chosen:
            counted["nothing"] += 1
            caught_up.append(subscription_id)
        elif chosen == own:
            counted["own"] += 1
            rows.append(dict(subscriber_id=subscriber_id, variant_id=None))
        else:
            counted["variant"] += 1
            key = story_key(chosen)
            if key not in variants:
                variants[key] = variant(session, settings, edition, chosen).id
            rows.append(dict(subscriber_id=subscriber_id, variant_id=variants[key]))
    counted["variants"] = len(variants)
    if rows:
        for row in rows:
            at = ahead.get(zones[row["subscriber_id"]])
            row.update(status="waiting" if at else "pending", next_attempt_at=at or now)
        rows.sort(key=lambda row: (row["next_attempt_at"], row["subscriber_id"]))  # a wave on consecutive ids
        session.execute(insert(Delivery), [dict(edition_id=edition.id, attempts=0, created_at=now, **row)
                                           for row in rows])
    if caught_up:
        # Nothing in this edition (or before it) for them: nothing missed, the next mail starts after it.
        session.execute(update(Subscription).where(Subscription.id.in_(caught_up))
                        .values(cursor_edition_id=edition.id).execution_options(synchronize_session=False))
    log.info("%s edition %d: %s", newsletter.slug, edition.number, counted)
    return counted


# ── the cursor ───────────────────────────────────────────────────────────────

FOLD_CHUNK = 1_000  # readers per statement of a batch's fold


def fold(executor: Session | Connection, edition_id: int, newsletter_id: int, readers: list[int]) -> None:
    """The cursors of these readers (subscriber ids), to whom the edition's mail was sent, moved forwards to
    it (_forwards); in the caller's transaction. The same fold again changes nothing."""
    statement = _forwards(array=_dialect(executor).name == "postgresql")
    for start in range(0, len(readers), FOLD_CHUNK):
        executor.execute(statement, dict(edition=edition_id, newsletter=newsletter_id,
                                         readers=readers[start:start + FOLD_CHUNK]))


def fold_edition(session: Session, edition: Edition) -> None:
    """Every reader the edition's mail was sent to, folded (a batch whose worker was killed never folded
    its own)."""
    session.execute(_forwards(whole_edition=True), dict(edition=edition.id, newsletter=edition.newsletter_id))


def fold_open(session: Session, newsletter_id: int) -> None:
    """The newsletter's editions still going out, folded: before their cursors are read. (A closed edition
    was folded as it closed.)"""
    for edition in session.scalars(select(Edition).where(
            Edition.newsletter_id == newsletter_id, Edition.started_at.is_not(None),
            Edition.status.not_in(("sent", "failed")))):
        fold_edition(session, edition)


def back(session: Session, edition_id: int, newsletter_id: int, subscriber_id: int) -> None:
    """A mail of the edition given up on ("failed"), in the transaction that records it (_back)."""
    session.execute(_back(), dict(edition=edition_id, newsletter=newsletter_id, subscriber=subscriber_id))


def _dialect(executor: Session | Connection):
    return executor.get_bind().dialect if isinstance(executor, Session) else executor.dialect


def _forwards(whole_edition: bool = False, array: bool = False):
    """The readers' cursors move to the edition sent to them, forwards only (by when editions started: an
    edition prepared early and sent late still counts from its start), and not past a move back made since
    the edition started (back). `whole_edition`: every reader with a "sent" row of it, else those given."""
    subscriptions, editions = Subscription.__table__, Edition.__table__
    at = editions.alias("at_cursor")
    started = select(editions.c.started_at).where(editions.c.id == bindparam("edition")).scalar_subquery()
    behind = select(at.c.id).where(at.c.id == subscriptions.c.cursor_edition_id, at.c.started_at < started).exists()
    if whole_edition:
        deliveries = Delivery.__table__
        readers = select(deliveries.c.subscriber_id).where(deliveries.c.edition_id == bindparam("edition"),
                                                           deliveries.c.status == "sent")
        chosen = subscriptions.c.subscriber_id.in_(readers)
    elif array:
        chosen = subscriptions.c.subscriber_id == any_(bindparam("readers", type_=ARRAY(Integer)))
    else:
        chosen = subscriptions.c.subscriber_id.in_(bindparam("readers", expanding=True))
    return (update(subscriptions)
            .where(chosen,
                   subscriptions.c.newsletter_id == bindparam("newsletter"),
                   or_(subscriptions.c.cursor_edition_id.is_(None), behind),
                   or_(subscriptions.c.cursor_back_at.is_(None), subscriptions.c.cursor_back_at < started))
            .values(cursor_edition_id=bindparam("edition")))


def _back():
    """A mail given up on ("failed"). If the reader's cursor has passed its edition (a later edition's mail
    reached them while this one was being retried, so its stories weren't carried into that one), the
    cursor goes back to the edition started just before it (none, if it was the first), and the reader's
    next mail carries its stories; the later editions that reached them aren't carried again: _story_sets
    leaves out every edition a delivery of theirs went out in.

    Either way the moment is kept, in editions' time (the start of the newsletter's latest edition: one
    clock, the one that starts editions). A fold that comes later for an edition started by then — a
    batch still going, or one a killed worker left to the edition's close — no longer moves the cursor:
    that edition's fan-out didn't carry these stories either. An edition started after does."""
    subscriptions, editions = Subscription.__table__, Edition.__table__
    at, earlier = editions.alias("at_cursor"), editions.alias("earlier")
    started = select(editions.c.started_at).where(editions.c.id == bindparam("edition")).scalar_subquery()
    passed = select(at.c.id).where(at.c.id == subscriptions.c.cursor_edition_id, at.c.started_at >= started).exists()
    before = (select(earlier.c.id)
              .where(earlier.c.newsletter_id == bindparam("newsletter"), earlier.c.started_at.is_not(None),
                     earlier.c.started_at < started, earlier.c.id != bindparam("edition"))
              .order_by(earlier.c.started_at.desc(), earlier.c.id.desc()).limit(1).scalar_subquery())
    latest = select(func.max(editions.c.started_at)).where(editions.c.newsletter_id == bindparam("newsletter"))
    return (update(subscriptions)
            .where(subscriptions.c.subscriber_id == bindparam("subscriber"),
                   subscriptions.c.newsletter_id == bindparam("newsletter"))
            .values(cursor_edition_id=case((passed, before), else_=subscriptions.c.cursor_edition_id),
                    cursor_back_at=latest.scalar_subquery()))


def _insert_in_slices(session: Session, recipients, progress: Callable[[int, int], object] | None) -> int:
    total = session.scalar(select(func.count()).select_from(recipients.order_by(None).subquery())) if progress else 0
    done, after = 0, None
    while True:
        part = recipients if after is None else recipients.where(Subscriber.id > after)
        part = part.limit(FAN_OUT_SLICE).subquery()
        # Each wave of a local-time edition on consecutive ids (one wave only, most days: the same order)
        ordered = select(part).order_by(part.c.next_attempt_at, part.c.subscriber_id)
        # RETURNING, not rowcount: PostgreSQL's driver gave -1 for an INSERT … SELECT here
        added = session.scalars(insert(Delivery).from_select(
            ["edition_id", "subscriber_id", "status", "attempts", "created_at", "next_attempt_at"],
            ordered).returning(Delivery.subscriber_id)).all()
        done += len(added)
        if progress is not None:
            progress(done, total)
        if len(added) < FAN_OUT_SLICE:
            return done
        after = max(added)


@dataclass
class _Sets:
    this: Started
    each: list[tuple[int, int, list[int] | None]]  # subscription, subscriber, story ids (None: not due)


def _story_sets(session: Session, edition: Edition, others, now: datetime) -> _Sets:
    newsletter = edition.newsletter
    started_at = edition.started_at or now
    since = started_at - timedelta(days=CARRY_DAYS)
    editions = session.execute(
        select(Edition.id, Edition.started_at).where(
            Edition.newsletter_id == newsletter.id, Edition.started_at.is_not(None),
            Edition.started_at >= since, Edition.started_at <= started_at, Edition.status != "cancelled")
        .order_by(Edition.started_at.desc(), Edition.id.desc())).all()
    stories: dict[int, list[Story]] = {e.id: [] for e in editions}
    for edition_id, article_id, categories in session.execute(
            select(EditionArticle.edition_id, Article.id, Article.categories)
            .join(Article, Article.id == EditionArticle.article_id)
            .where(EditionArticle.edition_id.in_(list(stories)), Article.withdrawn_at.is_(None))
            .order_by(EditionArticle.edition_id, EditionArticle.position)):
        stories[edition_id].append(Story(article_id, frozenset(c.casefold() for c in categories or [])))
    # newest first; this edition first of all
    started = [Started(e.id, e.started_at, stories[e.id]) for e in editions if e.id != edition.id]
    this = Started(edition.id, started_at, stories.get(edition.id) or [])
    when = {e.id: e.started_at for e in started}
    cursors = {row.cursor_edition_id for row in others if row.cursor_edition_id is not None}
    for edition_id, at in session.execute(select(Edition.id, Edition.started_at).where(
            Edition.id.in_(cursors - set(when)))):
        when[edition_id] = at
    # Editions where the reader's delivery went out, or may yet: not missed.
    reached: set[tuple[int, int]] = set()
    if started:
        subscribers = [row[1] for row in others]
        for i in range(0, len(subscribers), 5000):
            reached.update(session.execute(select(Delivery.edition_id, Delivery.subscriber_id).where(
                Delivery.edition_id.in_([e.id for e in started]),
                Delivery.subscriber_id.in_(subscribers[i:i + 5000]),
                Delivery.status.in_((*MAIL_OPEN, "sent")))).all())
    welcome = None
    if newsletter.welcome_digest:
        welcome = session.execute(select(Edition.id, Edition.started_at).where(
            Edition.newsletter_id == newsletter.id, Edition.status == "sent", Edition.id != edition.id)
            .order_by(Edition.started_at.desc()).limit(1)).first()
    each = []
    for subscription_id, subscriber_id, topics, frequency, cursor, created_at, _zone in others:
        last = when.get(cursor) if cursor is not None else None
        if last is not None and started_at - last < DUE_AFTER.get(frequency, timedelta(0)):
            each.append((subscription_id, subscriber_id, None))
            continue
        if cursor is None:
            # From when they subscribed; with the welcome digest, the last edition before that too.
            carried = [e for e in started if e.started_at >= created_at
                       or (welcome is not None and e.id == welcome.id)]
        elif last is None:
            carried = []  # the cursor's edition is gone: nothing to count from
        else:
            carried = [e for e in started if e.started_at > last]
        carried = [e for e in carried if (e.id, subscriber_id) not in reached]
        wanted = {t.casefold() for t in topics} if topics else None
        chosen = [s.id for e in [this, *carried] for s in e.stories if wanted is None or s.categories & wanted]
        each.append((subscription_id, subscriber_id, list(dict.fromkeys(chosen))))
    return _Sets(this, each)


def story_key(article_ids: list[int]) -> str:
    """What makes two readers' mails one: the same stories (the order follows from them)."""
    return hashlib.sha256(",".join(map(str, sorted(article_ids))).encode()).hexdigest()


def variant(session: Session, settings: Settings, edition: Edition, article_ids: list[int]) -> EditionVariant:
    """The edition rendered once for one story set (found again if it was already), by the edition's own
    rendering: its subject template, its intro, each story's blurb from its own edition, each counted link
    the one its own edition made."""
    # Here, not at the top: listings read delivery counts through this package, and must not load premailer.
    from syndicate.newsletters import clicks, rendering

    key = story_key(article_ids)
    found = session.scalars(select(EditionVariant).where(EditionVariant.edition_id == edition.id,
                                                         EditionVariant.key == key)).first()
    if found is not None:
        return found
    newsletter: Newsletter = edition.newsletter
    shown_ids, more = article_ids[:newsletter.max_items], max(0, len(article_ids) - newsletter.max_items)
    articles = {a.id: a for a in session.scalars(select(Article).where(Article.id.in_(shown_ids)))}
    placed = {row.article_id: row for row in session.execute(
        select(EditionArticle.article_id, EditionArticle.edition_id, EditionArticle.blurb)
        .where(EditionArticle.newsletter_id == newsletter.id, EditionArticle.article_id.in_(shown_ids)))}
    ordered = [articles[i] for i in shown_ids if i in articles]
    blurbs = {i: placed[i].blurb for i in shown_ids if i in placed and placed[i].blurb}
    shown = None
    if newsletter.count_clicks:
        numbers = {(row.edition_id, row.article_id): row.number for row in session.execute(
            select(EditionLink.edition_id, EditionLink.article_id, EditionLink.number)
            .where(EditionLink.article_id.in_(shown_ids)))}
        shown = []
        for article in ordered:
            home = placed[article.id].edition_id if article.id in placed else None
            number = numbers.get((home, article.id))
            shown.append(clicks.Counted(article, clicks.link_url(settings, home, number)) if number else article)
    subject, html, text, _ = rendering.render_with_notes(newsletter, edition, ordered, settings, shown, blurbs,
                                                         more=more)
    made = EditionVariant(edition_id=edition.id, key=key, article_ids=[a.id for a in ordered], more=more,
                          subject=subject, html=html, text=text, created_at=utcnow())
    session.add(made)
    session.flush()
    return made

