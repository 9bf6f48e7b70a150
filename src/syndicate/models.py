"""Every table: each row the pipeline reads or writes (the rows `ledger` moves among them).

feed ──poll──▶ article ──cut──▶ edition ──fan out──▶ delivery ──▶ SMTP
                  └──compose──▶ post (article × account) ──▶ X / Mastodon / Bluesky

Delivery and Post are written before their side effect and carry a unique key,
so a retry or a second worker finds the row and never acts twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from annotated_types import Interval
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


naming = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Every id column is an `integer`, which on PostgreSQL ends at 2**31 - 1 (SQLite's at 2**63 - 1): an id a
# request names is checked against that where it comes in, since one past it makes the database raise
# instead of finding nothing.
MAX_ID = 2**31 - 1
RowId = Annotated[int, Interval(ge=1, le=MAX_ID)]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=naming)
    type_annotation_map = {datetime: UTCDateTime}


class Feed(Base):
    __tablename__ = "feeds"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    title: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20), default="active")  # active | disabled
    etag: Mapped[str | None] = mapped_column(String(500))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    last_fetched_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    next_fetch_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    articles: Mapped[list[Article]] = relationship(back_populates="feed")


class Article(Base):
    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(primary_key=True)
    feed_id: Mapped[int | None] = mapped_column(ForeignKey("feeds.id", ondelete="SET NULL"))
    # guid, else canonical link, else a hash of title + content: what makes two items one story
    identity: Mapped[str] = mapped_column(String(2048), unique=True)
    url: Mapped[str] = mapped_column(String(2048), index=True)  # canonical
    title: Mapped[str] = mapped_column(String(1000))
    lead: Mapped[str] = mapped_column(Text, default="")
    content_html: Mapped[str] = mapped_column(Text, default="")
    content_hash: Mapped[str] = mapped_column(String(64))
    author: Mapped[str | None] = mapped_column(String(300))
    image_url: Mapped[str | None] = mapped_column(String(2048))
    image_alt: Mapped[str | None] = mapped_column(Text)  # the image's own alt text or caption, for posts
    language: Mapped[str | None] = mapped_column(String(35))  # BCP 47, from the feed or detected; None: unknown
    categories: Mapped[list] = mapped_column(JSON, default=list)
    published_at: Mapped[datetime]
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime | None]
    withdrawn_at: Mapped[datetime | None]  # an editor took the story back: off the archive, its posts retracted
    withdrawn_by: Mapped[str | None] = mapped_column(String(64))

    feed: Mapped[Feed | None] = relationship(back_populates="articles")


class ApiToken(Base):
    """A secret sent as a Bearer token: a CMS's, to push stories, a scraper's, a mail provider's, or an
    editor's, for the desk's JSON API (`editor_id` set); `scopes` say which. Only its sha256 is kept: a
    leaked database leaks no token."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)  # who holds it, e.g. "wordpress"
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    editor_id: Mapped[int | None] = mapped_column(ForeignKey("editors.id", ondelete="CASCADE"), index=True)
    # What it may do, space-separated as in OAuth (api_tokens.SCOPES), e.g. "articles:push metrics:read".
    scopes: Mapped[str] = mapped_column(String(200), default="", server_default="")


DEFAULT_SUBJECT = (
    '{{ top.title }}{% if rest %} — and {{ rest }} more {{ "story" if rest == 1 else "stories" }}{% endif %}'
)


class Newsletter(Base):
    __tablename__ = "newsletters"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    from_name: Mapped[str] = mapped_column(String(200))
    from_address: Mapped[str] = mapped_column(String(320))
    reply_to: Mapped[str | None] = mapped_column(String(320))
    subject_template: Mapped[str] = mapped_column(String(500), default=DEFAULT_SUBJECT)
    template: Mapped[str] = mapped_column(String(100), default="edition")
    cron: Mapped[str | None] = mapped_column(String(100))  # None: no recurring edition (one-off, breaking)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # The language its readers get (dates, footer, confirmation mail, reader pages): one with a catalogue
    # in syndicate/locale (i18n.LANGUAGES).
    language: Mapped[str] = mapped_column(String(16), default="en", server_default="en")
    max_items: Mapped[int] = mapped_column(Integer, default=20)
    # A story published longer ago than this is never put into an edition (0: any age).
    max_age_hours: Mapped[int] = mapped_column(Integer, default=72, server_default="72")
    # Filters. None: every feed / every category.
    feed_ids: Mapped[list | None] = mapped_column(JSON)
    categories_include: Mapped[list | None] = mapped_column(JSON)
    categories_exclude: Mapped[list | None] = mapped_column(JSON)
    # An article in one of these goes out on its own, at once, as a breaking edition.
    breaking_categories: Mapped[list | None] = mapped_column(JSON)
    first_fill: Mapped[str] = mapped_column(String(20), default="none")  # none | last:N | hours:N
    status: Mapped[str] = mapped_column(String(20), default="active")  # active | paused | archived
    # Articles first seen before this are not news for this newsletter (set from first_fill).
    articles_since: Mapped[datetime] = mapped_column(default=utcnow)
    next_run_at: Mapped[datetime | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Story links of its editions go through a counting redirect (newsletters.clicks): counts per link, no reader.
    count_clicks: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The sender's postal address in the footer of its editions and confirmation mails, lines kept;
    # empty: SYNDICATE_POSTAL_ADDRESS (lists.postal_address says which one a mail carries).
    postal_address: Mapped[str] = mapped_column(String(500), default="", server_default="")
    # A welcome mail (templates/email/welcome, or welcome-<slug> among the overrides) once a reader confirms.
    welcome: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Regular editions go at the slot's wall-clock time in each reader's zone (delivery.waves), not at one instant.
    local_time: Mapped[bool] = mapped_column(default=False, server_default=false())
    # A reader who confirms gets the latest sent edition's stories (of their topics) as their first mail.
    welcome_digest: Mapped[bool] = mapped_column(default=False, server_default=false())


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    # pending | confirmed | unsubscribed | bounced | complained
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[datetime | None]
    confirmation_sent_at: Mapped[datetime | None]  # when the last confirmation mail was asked for
    confirmations_sent: Mapped[int] = mapped_column(Integer, default=0)  # confirmation mails asked for
    timezone: Mapped[str | None] = mapped_column(String(64))  # IANA name; None: each newsletter's own zone

    subscriptions: Mapped[list[Subscription]] = relationship(back_populates="subscriber")


class ConfirmationMail(Base):
    """One mail to a reader about their own subscription: a ledger row (syndicate.ledger), claimed by the task
    that sends it. `kind` says which: the confirmation link, a newsletter's welcome, the link that confirms
    the reader asked to erase their data."""

    __tablename__ = "confirmation_mails"
    __table_args__ = (Index("ix_confirmation_mails_status_next", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # ledger.MailStatus
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime | None]  # deferred: when it is due again; pending: when it was handed out
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    last_reply: Mapped[str | None] = mapped_column(Text)
    # confirm | welcome (newsletter_id's) | erase (the link that confirms "delete my data")
    kind: Mapped[str] = mapped_column(String(20), default="confirm", server_default="confirm")
    newsletter_id: Mapped[int | None] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"))


class ErasedAddress(Base):
    """An address erased at its owner's request, kept only as a keyed hash (subscribers.rights): no import or
    editor adds it back; the reader's own confirmed sign-up removes it."""

    __tablename__ = "erased_addresses"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # HMAC-SHA256 hex of the normalised address
    erased_at: Mapped[datetime] = mapped_column(default=utcnow)


class ErasureKey(Base):
    """The one random key the erased addresses are hashed with: kept in the database, so a new
    SYNDICATE_SECRET_KEY doesn't let an import add back everyone erased before."""

    __tablename__ = "erasure_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64))


class Subscription(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("subscriber_id", "newsletter_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"))
    # pending (until the reader confirms by mail) | active | unsubscribed
    status: Mapped[str] = mapped_column(String(20), default="pending")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    unsubscribed_at: Mapped[datetime | None]
    # The reader's choices (delivery.choices): the newsletter's categories they want (None: every story),
    # and how often: each edition, or a daily or weekly digest of its stories.
    topics: Mapped[list | None] = mapped_column(JSON(none_as_null=True))
    frequency: Mapped[str] = mapped_column(String(10), default="each", server_default="each")  # each|daily|weekly
    # The last edition whose stories reached the reader (moved only with a delivery's "sent", forwards only,
    # or past an edition with nothing for them): the next mail carries every story since.
    cursor_edition_id: Mapped[int | None] = mapped_column(ForeignKey("editions.id", ondelete="SET NULL"))
    # When a mail of theirs last failed (and the cursor moved back, if a later mail had passed it), in editions'
    # time: the start of the newsletter's latest edition then. A mail of an edition started by then moves the
    # cursor forwards no more: its fan-out didn't carry the failed mail's stories (delivery.choices.back).
    cursor_back_at: Mapped[datetime | None]

    subscriber: Mapped[Subscriber] = relationship(back_populates="subscriptions")
    newsletter: Mapped[Newsletter] = relationship()


class Edition(Base):
    __tablename__ = "editions"
    __table_args__ = (UniqueConstraint("newsletter_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    # draft → scheduled → sending → sent, plus paused, cancelled, skipped (an empty cut) and blocked (the
    # pre-send checks stopped it: `note` says why)
    status: Mapped[str] = mapped_column(String(20), default="draft")
    kind: Mapped[str] = mapped_column(String(20), default="regular")  # regular | one-off | breaking
    scheduled_for: Mapped[datetime | None] = mapped_column(index=True)
    # The regular run it stands for (a prepared edition keeps it when rescheduled): that run makes no other.
    slot: Mapped[datetime | None]
    cut_at: Mapped[datetime | None]
    subject: Mapped[str] = mapped_column(String(998), default="")
    custom_subject: Mapped[str | None] = mapped_column(String(998))  # an editor's, instead of the template's
    # An editor's own words, as typed (Markdown), rendered into the edition with its stories.
    intro: Mapped[str | None] = mapped_column(Text)
    sponsor_text: Mapped[str | None] = mapped_column(Text)
    sponsor_url: Mapped[str | None] = mapped_column(String(2048))
    warnings: Mapped[list] = mapped_column(JSON, default=list)  # found at the render, e.g. Gmail clipping
    # Rendered once at the cut, premailer-inlined; per-recipient tokens are filled in at send.
    html: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    note: Mapped[str | None] = mapped_column(Text)  # why it was skipped, etc.
    # The pre-send checks' last word (delivery.qa): {"at", "blocking": [{check, message}], "warnings": [...]}
    checks: Mapped[dict | None] = mapped_column(JSON)
    # Checks an editor let pass for this edition: [{check, reason, by, at}]
    overrides: Mapped[list | None] = mapped_column(JSON)
    left_out_for_age: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # stories too old
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]  # fanned out: its recipients are fixed from here on
    sent_at: Mapped[datetime | None]

    newsletter: Mapped[Newsletter] = relationship()
    items: Mapped[list[EditionArticle]] = relationship(
        back_populates="edition", order_by="EditionArticle.position"
    )


class EditionVariant(Base):
    """An edition as some readers get it: their own story set (their topics, stories carried from editions
    they missed), rendered once for every reader with that set. `key`: sha256 of the sorted article ids."""

    __tablename__ = "edition_variants"
    __table_args__ = (UniqueConstraint("edition_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    article_ids: Mapped[list] = mapped_column(JSON)  # in the order shown
    more: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # stories left out (on the web)
    subject: Mapped[str] = mapped_column(String(998))
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LinkCheck(Base):
    """What a story's link answered when the pre-send checks asked, kept a while so a day of editions
    doesn't ask the same page again and again. `status` None: no answer (`error` says why)."""

    __tablename__ = "link_checks"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the URL
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)  # bytes, as its Content-Length said; None: not said
    checked_at: Mapped[datetime]


class EditionArticle(Base):
    __tablename__ = "edition_articles"
    # The constraint that keeps an article out of two editions of one newsletter.
    __table_args__ = (UniqueConstraint("newsletter_id", "article_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"), index=True)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"))
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    blurb: Mapped[str | None] = mapped_column(Text)  # the editor's word on this story (Markdown), above its lead

    edition: Mapped[Edition] = relationship(back_populates="items")
    article: Mapped[Article] = relationship()


class EditionLink(Base):
    """One story link of an edition whose clicks are counted: where it goes, and how often it was followed.
    Nothing here says who followed it: no reader, address, cookie or user agent is kept anywhere."""

    __tablename__ = "edition_links"
    __table_args__ = (UniqueConstraint("edition_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)  # the story's place in the edition, from 1
    article_id: Mapped[int | None] = mapped_column(ForeignKey("articles.id", ondelete="SET NULL"))
    url: Mapped[str] = mapped_column(String(2048))  # the only place the redirect ever sends anyone
    clicks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("edition_id", "subscriber_id"),
        Index("ix_deliveries_edition_status", "edition_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    # None once the reader's data was erased: the row stays for the edition's figures, naming nobody.
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="SET NULL"))
    # pending → sending → sent | deferred | failed | skipped; waiting (for its reader's local time) → pending
    status: Mapped[str] = mapped_column(String(20), default="pending")
    claimed_by: Mapped[str | None] = mapped_column(String(64))  # the task that holds it
    claimed_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    last_reply: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    # The reader's own story set (delivery.choices); None: the edition's own render, as most readers get it.
    variant_id: Mapped[int | None] = mapped_column(ForeignKey("edition_variants.id", ondelete="SET NULL"))

    # What an erased reader had done after this delivery, which the edition's figures count (deliveries.report):
    # "bounced", "complained", "unsubscribed", comma-separated; their events went with them.
    erased_with: Mapped[str | None] = mapped_column(String(40))

    edition: Mapped[Edition] = relationship()
    subscriber: Mapped[Subscriber | None] = relationship()


class SubscriberEvent(Base):
    """What happened to a subscriber, in order: the timeline editors read, and the bounce count."""

    __tablename__ = "subscriber_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), index=True)
    newsletter_id: Mapped[int | None] = mapped_column(ForeignKey("newsletters.id", ondelete="SET NULL"))
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="SET NULL"), index=True)
    # subscribed | confirmed | unsubscribed | resubscribed | preferences | imported
    # | bounce (hard) | soft_bounce | complaint | suppressed
    kind: Mapped[str] = mapped_column(String(30))
    source: Mapped[str] = mapped_column(String(30))  # web | cli | import | smtp | ses | webhook | one-click
    detail: Mapped[str | None] = mapped_column(Text)
    # A provider's id for the event: the same notification twice is recorded once.
    source_id: Mapped[str | None] = mapped_column(String(300), unique=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class InboundMessage(Base):
    """A mail sent back to us (bounce report, complaint, unsubscribe, auto-reply, …) and what was done with it.
    The newest Settings.inbound_keep are kept; the raw bytes only of those nothing was done with (up to
    inbound.handling.KEEP_BYTES), for the operator to look at."""

    __tablename__ = "inbound_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    via: Mapped[str] = mapped_column(String(10))  # pipe | lmtp | smtp | imap
    # bounce | soft_bounce | complaint | unsubscribe | duplicate | ignored | refused
    outcome: Mapped[str] = mapped_column(String(20), index=True)
    form: Mapped[str] = mapped_column(String(80), default="")  # RFC 3464, ARF, Exim, mailto, auto-reply, …
    why: Mapped[str] = mapped_column(Text, default="")
    sender: Mapped[str] = mapped_column(String(300), default="")
    subject: Mapped[str] = mapped_column(String(300), default="")
    message_id: Mapped[str] = mapped_column(String(300), default="")
    size: Mapped[int] = mapped_column(Integer, default=0)
    digest: Mapped[str] = mapped_column(String(64))  # SHA-256 of the bytes: the same message twice counts once
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="SET NULL"))
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="SET NULL"))
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)


class Throttle(Base):
    """A counter per key and fixed window, shared by every process that uses the database."""

    __tablename__ = "throttles"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    window_start: Mapped[datetime]
    count: Mapped[int] = mapped_column(Integer, default=0)


class SendRate(Base):
    """Pacing state of one mail transport, shared by every worker (when the broker isn't Redis)."""

    __tablename__ = "send_rates"

    name: Mapped[str] = mapped_column(String(300), primary_key=True)
    state: Mapped[dict] = mapped_column(JSON, default=dict)


class SocialAccount(Base):
    """One account on one network. Settings are plain JSON (accounts.AccountSettings reads them);
    credentials and the Bluesky session are encrypted with a key derived from SYNDICATE_SECRET_KEY."""

    __tablename__ = "social_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    network: Mapped[str] = mapped_column(String(20))  # x | mastodon | bluesky
    # active | paused (its queue waits) | disabled (nothing planned, its queue skipped)
    status: Mapped[str] = mapped_column(String(20), default="active")
    paused_reason: Mapped[str | None] = mapped_column(Text)  # why: an editor's words, or the network's refusal
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    credentials: Mapped[str | None] = mapped_column(Text)  # Fernet token of a JSON object; None: dry-run only
    session: Mapped[str | None] = mapped_column(Text)  # Fernet token of the Bluesky session string
    parked_until: Mapped[datetime | None]  # the network said to wait (429) until then
    last_dispatched_at: Mapped[datetime | None]  # the minimum gap counts from here
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Editor(Base):
    """Someone who signs in to the desk. Only an argon2id hash of the password is kept."""

    __tablename__ = "editors"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_sign_in_at: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]
    timezone: Mapped[str | None] = mapped_column(String(64))  # the desk shows times here; None: UTC
    # Carried in each desk session cookie; signing out or a new password moves it on, and every cookie
    # carrying an older one is refused: the signed cookie alone can't be taken back.
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class SubscriberImport(Base):
    """A CSV file an editor uploaded on the desk, imported by a worker in chunks: `done` of `total` rows
    so far, then the report (counts and the rows not imported, with why). The file is kept until then."""

    __tablename__ = "subscriber_imports"

    id: Mapped[int] = mapped_column(primary_key=True)
    editor: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255))
    data: Mapped[str | None] = mapped_column(Text)  # the decoded file; emptied once imported
    newsletter_ids: Mapped[list] = mapped_column(JSON, default=list)
    confirmed: Mapped[bool] = mapped_column(default=True)
    force: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(20), default="queued")  # queued | running | done | failed
    total: Mapped[int] = mapped_column(default=0)
    done: Mapped[int] = mapped_column(default=0)
    report: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    progressed_at: Mapped[datetime | None]  # queued, or last moved on: one not moved on for long lost its task
    finished_at: Mapped[datetime | None]


class Switch(Base):
    """A kill switch: while `engaged`, the thing it names stops (\"social\": every post, every account)."""

    __tablename__ = "switches"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    engaged: Mapped[bool] = mapped_column(default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class Post(Base):
    """One teaser of one article on one account; `share` > 0 only for an editor's explicit re-share."""

    __tablename__ = "posts"
    __table_args__ = (UniqueConstraint("article_id", "account_id", "share"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(ForeignKey("social_accounts.id", ondelete="CASCADE"))
    share: Mapped[int] = mapped_column(Integer, default=0)
    # pending → sending → posted | ambiguous | failed | skipped; held and cancelled by editors;
    # posted | ambiguous → retracted when an editor takes it back
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    lane: Mapped[str] = mapped_column(String(20), default="regular")  # regular | breaking (goes first)
    text: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict] = mapped_column(JSON, default=dict)  # the teaser's link, facets, length; the link card
    edited: Mapped[bool] = mapped_column(default=False)  # an editor's text: never recomposed
    dry_run: Mapped[bool] = mapped_column(default=False)
    scheduled_at: Mapped[datetime | None]  # an editor's "not before"
    planned_at: Mapped[datetime | None]  # when pacing expects it to go (shown in the queue)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    uncertain: Mapped[bool] = mapped_column(default=False)  # an attempt may have reached the network unanswered
    next_attempt_at: Mapped[datetime | None]
    remote_id: Mapped[str | None] = mapped_column(String(200))
    remote_url: Mapped[str | None] = mapped_column(String(2048))
    error: Mapped[str | None] = mapped_column(Text)  # the last error, or why it was skipped
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    posted_at: Mapped[datetime | None]
    retracted_at: Mapped[datetime | None]
    retracted_by: Mapped[str | None] = mapped_column(String(64))  # the editor (or "cli") who took it back

    article: Mapped[Article] = relationship()
    account: Mapped[SocialAccount] = relationship()


class Removal(Base):
    """A feed, newsletter or social account disabled, archived, deleted or brought back, by whom, and what it
    took with it in words: kept apart, since a deleted row leaves nothing of its own behind."""

    __tablename__ = "removals"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # feed | newsletter | account
    name: Mapped[str] = mapped_column(String(2048))  # the feed's URL, the newsletter's slug, the account's name
    action: Mapped[str] = mapped_column(String(20))  # disabled | enabled | archived | deleted
    by: Mapped[str] = mapped_column(String(64))  # the editor, or "cli"
    detail: Mapped[str] = mapped_column(Text, default="")  # what happened to what depended on it
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
