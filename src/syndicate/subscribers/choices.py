"""A reader's choices per newsletter: which of its topics (categories) and how often (each edition, a daily
or a weekly digest). Checked here for every way in (the preferences page, the CSV import, the desk); the
fan-out (delivery.choices) reads them.

The topics offered are the editor's include filter when there is one (the newsletter is about exactly
those), else the categories its recent editions' stories were filed under: a reader chooses among what
the newsletter actually sends, not among every word a feed ever used.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from syndicate.errors import InvalidInput
from syndicate.models import Article, Edition, EditionArticle, Newsletter, Subscription
from syndicate.text import one_line


def N_(text: str) -> str:
    """Marks a string for translation where it is defined; the page translates it where it is shown."""
    return text


# What each frequency means to the reader, as the preferences page and the CSV help say it.
FREQUENCIES = {
    "each": N_("every edition"),
    "daily": N_("a daily digest (at most one mail a day: the first edition at least 20 hours after the last one)"),
    "weekly": N_("a weekly digest (at most one mail a week: the first edition at least 6½ days after the last one)"),
}
RECENT_EDITIONS = 20  # the editions whose stories' categories are offered when there is no include filter
MAX_TOPICS = 50


def topics_of(session: Session, newsletter: Newsletter) -> list[str]:
    """The topics a reader of `newsletter` may choose, in a stable order (as the editor or the feeds wrote them)."""
    if newsletter.categories_include:
        found = list(newsletter.categories_include)
    else:
        recent = select(Edition.id).where(Edition.newsletter_id == newsletter.id, Edition.started_at.is_not(None)) \
            .order_by(Edition.started_at.desc()).limit(RECENT_EDITIONS)
        found = sorted({c for categories in session.scalars(
            select(Article.categories).join(EditionArticle, EditionArticle.article_id == Article.id)
            .where(EditionArticle.edition_id.in_(recent.scalar_subquery()))) for c in categories or []},
            key=str.casefold)
    excluded = {c.casefold() for c in newsletter.categories_exclude or []}
    seen: dict[str, str] = {}
    for topic in found:
        if isinstance(topic, str) and topic.strip() and topic.casefold() not in excluded:
            seen.setdefault(topic.casefold(), topic)
    return list(seen.values())[:MAX_TOPICS]


def start_afresh(session: Session, subscription: Subscription) -> None:
    """A reader back after leaving: what went out while they were away isn't theirs to have missed, so
    their stories start after the newsletter's latest edition (the cursor only ever moves forwards)."""
    subscription.cursor_edition_id = session.scalar(
        select(Edition.id).where(Edition.newsletter_id == subscription.newsletter_id, Edition.started_at.is_not(None))
        .order_by(Edition.started_at.desc(), Edition.id.desc()).limit(1)) or subscription.cursor_edition_id


def check_topics(newsletter: Newsletter, offered: list[str], chosen: list[str] | None) -> list[str] | None:
    """The topics as stored: the newsletter's own spelling of each chosen one; None (every story) when none
    or all are chosen. A topic the newsletter doesn't offer is refused, saying which it does."""
    if not chosen:
        return None
    spelled = {t.casefold(): t for t in offered}
    picked, unknown = [], []
    for topic in chosen:
        name = one_line(str(topic))[:100]
        (picked if name.casefold() in spelled else unknown).append(name)
    if unknown:
        choose = ", ".join(offered) if offered else "none yet: leave the topics empty to get every story"
        raise InvalidInput(f"{newsletter.name} has no topic {', '.join(repr(t) for t in unknown[:5])}; "
                           f"choose among: {choose}")
    stored = list(dict.fromkeys(spelled[t.casefold()] for t in picked))
    return None if len(stored) == len(offered) else stored


def check_frequency(value: str | None) -> str:
    """'each', 'daily' or 'weekly' (empty: each); anything else is refused, saying which there are."""
    frequency = (value or "each").strip().lower()
    if frequency not in FREQUENCIES:
        raise InvalidInput(f"no frequency {one_line(str(value))[:40]!r}; choose each, daily or weekly")
    return frequency
