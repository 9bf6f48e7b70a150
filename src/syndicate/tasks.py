"""Celery tasks: thin. Each takes ids, opens a session, calls one domain function, queues after commit.

Run them with `celery -A syndicate.tasks worker -Q ingest|mail|social` and
`celery -A syndicate.tasks beat`, or all on one machine with `syndicate run`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import kombu.pools
from celery import Celery
from celery.signals import worker_process_init, worker_ready
from kombu import Queue
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from syndicate import broker, private_files, services
from syndicate.config import Settings
from syndicate.db import transaction
from syndicate.delivery import sending
from syndicate.delivery.batches import send_batch
from syndicate.errors import SettingsError, TransportError
from syndicate.ingest import feeds
from syndicate.models import Post, utcnow
from syndicate.social import accounts, checks, pace, posts
from syndicate.subscribers import consent, uploads

log = logging.getLogger(__name__)
assert broker.EmbeddedTransport  # registered for sqla+ URLs on import
QUEUES = ("ingest", "mail", "social")
DB_RETRY_FIRST, DB_RETRY_MAX, DB_RETRIES = 5, 300, 8  # a batch the database failed: 5, 10, 20 … 300 s, ~15 min
# A request that stored its work asks the broker once more after a short pause, then answers all the same.
HAND_OVER_RETRY = {"max_retries": 1, "interval_start": 0.2, "interval_step": 0, "interval_max": 0.2}


def hand_over(task, *args) -> bool:
    """Queue `task(*args)` after the commit that stored its work; False, logged, if the broker can't be
    reached. For the web's requests: what they accepted is stored, and the beat's ticks hand it out
    later (lost confirmations, the social tick, the edition tick), so a broker outage delays the work
    and is no reason to tell the reader or the CMS it failed."""
    try:
        task.apply_async(args, retry=True, retry_policy=HAND_OVER_RETRY)
        return True
    except Exception as e:  # kombu's OperationalError, the transport's own: nothing the caller can do now
        log.warning("could not queue %s%r, the tick hands it out later: %s: %s", task.name, args,
                    type(e).__name__, e)
        return False


def celery_config(settings: Settings) -> dict:
    private_files.make_dir(settings.data_dir)
    if settings.broker_url.startswith("sqla+sqlite:"):  # the embedded broker's queue: 0600 like the rest
        broker_file = make_url(settings.broker_url.removeprefix("sqla+")).database
        if broker_file and broker_file != ":memory:":
            private_files.create(Path(broker_file))
    config = dict(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # Acknowledge after the work, re-queue when a worker dies: the ledger makes that safe.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="mail",
        task_routes={
            "syndicate.poll_feeds": {"queue": "ingest"},
            "syndicate.poll_feed_batch": {"queue": "ingest"},
            "syndicate.tick": {"queue": "mail"},
            "syndicate.deliver_batch": {"queue": "mail"},
            "syndicate.send_confirmation": {"queue": "mail"},
            "syndicate.import_subscribers": {"queue": "mail"},
            "syndicate.social_tick": {"queue": "social"},
            "syndicate.publish_post": {"queue": "social"},
            "syndicate.poll_inbound": {"queue": "ingest"},
        },
        # Schedules are rows in the database; these short ticks claim what is due.
        beat_schedule={
            "tick": {"task": "syndicate.tick", "schedule": settings.tick_interval},
            "poll-feeds": {"task": "syndicate.poll_feeds", "schedule": settings.tick_interval},
            "social-tick": {"task": "syndicate.social_tick", "schedule": settings.tick_interval},
        },
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        timezone="UTC",
        enable_utc=True,
        worker_hijack_root_logger=False,
        broker_transport_options=transport_options(settings.broker_url),
    )
    if settings.inbound_imap is not None:
        # A poll that outlives its interval is not queued twice over: the next one starts where it stopped.
        config["beat_schedule"]["poll-inbound"] = {"task": "syndicate.poll_inbound",
                                                   "schedule": settings.inbound_poll_interval,
                                                   "options": {"expires": settings.inbound_poll_interval}}
    return config


VISIBILITY_TIMEOUT = 3600  # seconds Redis waits for an acknowledgement before handing a task out again


def transport_options(broker_url: str) -> dict:
    if broker_url.startswith("redis"):
        # Every retry countdown and task time limit stays below this (Settings checks the one, a test the
        # other), so nothing is handed out again while it still runs.
        return {"visibility_timeout": VISIBILITY_TIMEOUT}
    return {}


def limited(soft: int) -> dict:
    """A task's deadline: at `soft` seconds SoftTimeLimitExceeded is raised in it (its open transaction rolls
    back; the ledger and the next tick take the work up again), a minute later the worker kills the pool
    process that ignored it (prefork, as `syndicate run` and the compose file use). A task that hangs on
    something outside (a template's import, a server that never answers) then frees its worker."""
    return dict(soft_time_limit=soft, time_limit=soft + 60)


def _config_from_environment() -> dict:
    """`celery -A syndicate.tasks …` reads SYNDICATE_* here; bad settings stop it with one line."""
    try:
        return celery_config(services.current().settings)
    except SettingsError as e:
        sys.stderr.write(f"syndicate: {e}\n")
        raise SystemExit(2) from None


app = Celery("syndicate")
app.add_defaults(_config_from_environment)
app.steps["worker"].add(broker.QueueLockWatch)


@worker_process_init.connect
def _own_database_connections_after_fork(**_) -> None:
    services.current().forget_connections()


@worker_ready.connect
def _warn_without_postal_address(**_) -> None:
    """Said in every worker's log at start, where a distributed install's operator looks: mail without a
    postal address breaks bulk-mail rules, and nothing else would say so before a reader complains."""
    from syndicate.newsletters import stored

    try:
        svc = services.current()
        with transaction(svc.Session) as session:
            missing = stored.without_postal_address(session, svc.settings)
            if missing:
                log.warning("%s", stored.postal_address_warning(missing))
    except Exception as e:  # a database not migrated yet, or away: the worker starts all the same
        log.info("could not check the newsletters' postal addresses at start: %s: %s", type(e).__name__, e)


def configure(settings: Settings) -> services.Services:
    """Point this process (and its Celery app) at other settings: the CLI and tests use it."""
    svc = services.use(settings)
    app.conf.update(celery_config(settings))
    # Connections pooled for the previous broker must not be reused for the new one.
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    kombu.pools.reset()  # kombu keeps pools per URL process-wide: the closed one must not come back
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None
    return svc


# ── ingest ───────────────────────────────────────────────────────────────────


FEEDS_PER_TASK = 50
POLL_CONCURRENCY = 16  # fetches at a time in one task: a slow server holds one thread, not the queue


@app.task(name="syndicate.poll_feeds", **limited(60))  # claims rows, queues batches
def poll_feeds() -> int:
    """Claim the feeds that are due and hand them out in batches."""
    svc = services.current()
    with transaction(svc.Session) as session:
        due = feeds.claim_due(session, svc.settings, utcnow())
    for i in range(0, len(due), FEEDS_PER_TASK):
        poll_feed_batch.delay(due[i:i + FEEDS_PER_TASK])
    return len(due)


@app.task(name="syndicate.poll_feed_batch", **limited(600))  # 50 feeds, 16 at a time, each with its deadline
def poll_feed_batch(feed_ids: list[int]) -> dict:
    svc = services.current()
    results = feeds.poll_many(svc.Session, svc.settings, feed_ids, concurrency=POLL_CONCURRENCY)
    for result in results:
        if result.error:
            log.warning("feed %s: %s", result.url, result.error)
    new = sum(len(r.new_article_ids) for r in results)
    if new:
        social_tick.delay()
        tick.delay()  # a breaking story goes out now, not at the next beat
    return {"feeds": len(results), "new": new, "errors": sum(1 for r in results if r.error)}


@app.task(name="syndicate.poll_inbound", **limited(600))
def poll_inbound() -> str:
    """Read the inbound mailbox (bounce reports, complaints, unsubscribe mails) and handle what is there."""
    from syndicate.inbound import handling, imap

    svc = services.current()
    if svc.settings.inbound_imap is None:
        return "no SYNDICATE_INBOUND_IMAP_URL: nothing to poll"
    result = imap.poll(svc.settings.inbound_imap, lambda raw: handling.receive(
        svc.Session, svc.settings, raw, via="imap").outcome)
    log.info("inbound mailbox: %s", result.summary)
    return result.summary


# ── mail ─────────────────────────────────────────────────────────────────────


@app.task(name="syndicate.tick", **limited(300))  # renders and fans out the editions due
def tick() -> int:
    """Start the editions that are due (regular, one-off, breaking) and hand every delivery that needs
    it to a worker; and every confirmation mail and subscriber import whose task was lost."""
    svc = services.current()
    batches = sending.run_due(svc.Session, svc.settings, utcnow())
    for edition_id, lo, hi in batches:
        deliver_batch.delay(edition_id, lo, hi)
    with transaction(svc.Session) as session:
        lost = consent.lost_confirmations(session, svc.settings, utcnow())
        imports = uploads.lost_imports(session, svc.settings, utcnow())
    for subscriber_id in lost:
        send_confirmation.delay(subscriber_id)
    for import_id in imports:
        import_subscribers.delay(import_id)
    return len(batches)


@app.task(name="syndicate.deliver_batch", bind=True, **limited(3000))  # a paced batch may wait its turn
def deliver_batch(self, edition_id: int, lo: int, hi: int) -> dict:
    """One batch. If the database goes away or stays locked mid-batch, the batch runs again in seconds
    (_again_later); after DB_RETRIES the stale-claim sweep is what is left."""
    svc = services.current()
    try:
        result = send_batch(svc.Session, svc.settings, svc.transport, edition_id, lo, hi,
                            token=self.request.id or f"local-{edition_id}-{lo}", pacer=svc.pacer)
    except OperationalError as e:
        raise _again_later(self, e, f"batch {edition_id}:{lo}-{hi}") from e
    return result.counts


def _again_later(task, e: OperationalError, what: str):
    """The same task (the same id: the same claim) again in a few seconds, with backoff, after the database
    went away or stayed locked: what it held is taken back at once, not after the stale-claim sweep."""
    delay = min(DB_RETRY_FIRST * 2 ** task.request.retries, DB_RETRY_MAX)
    log.warning("%s: the database failed (%s); trying again in %d s", what, e.orig if e.orig is not None else e,
                delay)
    return task.retry(exc=e, countdown=delay, max_retries=DB_RETRIES)


@app.task(name="syndicate.send_confirmation", bind=True, **limited(120))
def send_confirmation(self, subscriber_id: int) -> str:
    """Send a subscriber's confirmation mail, and any welcome or erasure-link mail of theirs, under this
    task's claim (ledger): a copy of this task finds them claimed and sends nothing. If the server puts one
    off, or this task is lost, the tick hands it out again (consent.lost_confirmations)."""
    svc = services.current()
    token = self.request.id or f"local-confirm-{subscriber_id}"
    with transaction(svc.Session) as session:
        now = utcnow()
        due = consent.confirmation_to_mail(session, svc.settings, subscriber_id, token, now)
        due = ([due] if due else []) + consent.reader_mails_to_send(session, svc.settings, subscriber_id, token, now)
    if not due:
        return "not needed"
    outcomes = []
    for mail_id, message in due:
        error = None
        try:
            with svc.transport.connect() as connection:
                reply = connection.send(message)
        except TransportError as e:
            log.log(logging.INFO if not e.permanent else logging.WARNING, "mail %d to subscriber %d %s: %s",
                    mail_id, subscriber_id, "refused" if e.permanent else "put off, the tick tries again", e)
            reply, error = str(e), e
        with transaction(svc.Session) as session:
            outcomes.append(consent.confirmation_sent(session, svc.settings, mail_id, token, utcnow(), reply=reply,
                                                      error=error))
    return "; ".join(outcomes)


@app.task(name="syndicate.import_subscribers", bind=True, **limited(3000))  # a big file, chunk by chunk
def import_subscribers(self, import_id: int) -> str:
    """A CSV file uploaded on the desk, imported chunk by chunk; a confirmation mail queued for each new
    address that waits for one, once its chunk is committed. Delivered again after a worker died, or
    after the database failed mid-way, it goes on where that run stopped."""
    svc = services.current()

    def confirm(subscriber_ids: list[int]) -> None:
        for subscriber_id in subscriber_ids:
            send_confirmation.delay(subscriber_id)

    try:
        return uploads.run_import(svc.Session, import_id, utcnow(), confirm=confirm).status
    except OperationalError as e:
        raise _again_later(self, e, f"subscriber import {import_id}") from e


# ── social ───────────────────────────────────────────────────────────────────


@app.task(name="syndicate.social_tick", **limited(600))  # checks new link cards
def social_tick() -> int:
    """Plan posts for new stories, check the link cards not checked yet, then dispatch what each account's
    pace allows."""
    svc = services.current()
    posts.prepare(svc.Session, svc.settings)
    with transaction(svc.Session) as session:
        due = pace.dispatch(session, svc.settings)
    for post_id in due:
        publish_post.delay(post_id)
    return len(due)


@app.task(name="syndicate.publish_post", bind=True, **limited(120))
def publish_post(self, post_id: int) -> str:
    """One post. The database failing meanwhile runs it again in seconds under the same claim; what the
    network got the first time it recognises again (Mastodon's idempotency key, Bluesky's record key),
    and X refuses as a duplicate."""
    svc = services.current()
    try:
        with transaction(svc.Session) as session:
            post = session.get(Post, post_id)
            if post is None:
                return "gone"
            client = svc.social_client(post.account)
            payload, article_url = post.payload, post.article.url
            account_settings = accounts.settings_of(post.account)
        card = checks.card_for(payload, svc.settings, with_image=client.network == "bluesky")  # outside: network
        image, image_error = checks.image_for(payload, svc.settings, account_settings, client.network, article_url)
        post = posts.publish(svc.Session, svc.settings, client, post_id,
                             token=self.request.id or f"local-{post_id}", card=card, image=image,
                             image_error=image_error)
    except OperationalError as e:
        raise _again_later(self, e, f"post {post_id}") from e
    return post.status
