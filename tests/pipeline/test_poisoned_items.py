"""One bad item never stops the rest (issue 17): each lane fed a poisoned item, then a good one.

The social lane runs as the beat runs it (the social tick task, its publish tasks eager); stories whose
link can't be posted are rows stored before links were checked on the way in (issue 15), as an upgraded
newsroom has them.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from conftest import configured
from syndicate import tasks
from syndicate.db import transaction
from syndicate.errors import TransportError
from syndicate.models import Article, Post, SocialAccount, utcnow
from syndicate.social import posts
from syndicate.social.clients.base import Published

POISON = ["https://news.example/a story with spaces", "javascript:alert(document.cookie)"]
GOOD = "https://news.example/2026/12/06/the-harbour-reopens/"


def newsroom(make_settings, tmp_path, urls: list[str]):
    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'p.db'}"), eager=True)
    with transaction(svc.Session) as session:
        posts.ensure_default_account(session)
        account = session.scalar(select(SocialAccount))
        account.settings = dict(window="always", min_gap=0, max_age=0)
        now = utcnow() + timedelta(seconds=1)
        for i, url in enumerate(urls):
            session.add(Article(identity=f"story-{i}", url=url, title=f"Story {i}", content_hash=f"h{i}",
                                published_at=now + timedelta(seconds=i), first_seen_at=now))
    return svc


def by_url(svc) -> dict[str, Post]:
    with transaction(svc.Session) as session:
        found = {}
        for post in session.scalars(select(Post)):
            _ = post.article.url
            found[post.article.url] = post
        return found


def test_a_story_whose_link_cannot_be_posted_fails_alone_and_the_next_story_goes_out(make_settings, tmp_path):
    svc = newsroom(make_settings, tmp_path, [*POISON, GOOD])
    for _ in range(3):
        tasks.social_tick.apply().get()  # raised on every tick before: no post for anyone, ever
    found = by_url(svc)
    assert found[GOOD].status == "posted"
    for url in POISON:
        assert found[url].status == "failed"
        assert "no teaser could be made" in found[url].error and "re-share" in found[url].error
    assert posts.plan(svc.Session(), svc.settings) == []  # recorded: never planned (or failed) again


class Flaky:
    """A network client whose publish breaks in a way nobody foresaw for one story, and works for the rest."""

    network, dry_run = "x", False

    def __init__(self, broken: str):
        self.broken, self.published = broken, []

    def publish(self, request):
        if self.broken in request.teaser.text:
            raise UnicodeEncodeError("ascii", "東京", 0, 1, "ordinal not in range(128)")
        self.published.append(request.post_id)
        return Published(remote_id=str(request.post_id), remote_url=None)


def test_a_post_that_breaks_unexpectedly_is_retried_with_backoff_then_failed_and_never_blocks_the_next(
        make_settings, tmp_path):
    svc = newsroom(make_settings, tmp_path, ["https://news.example/a/", GOOD])
    with transaction(svc.Session) as session:
        bad, good = posts.plan(session, svc.settings)
    client, clock = Flaky("Story 0"), [utcnow()]
    for attempt in range(1, posts.MAX_ATTEMPTS + 1):
        post = posts.publish(svc.Session, svc.settings, client, bad, token=f"t{attempt}", clock=lambda: clock[0])
        assert post.attempts == attempt and "UnicodeEncodeError" in post.error
        if attempt < posts.MAX_ATTEMPTS:
            assert post.status == "pending" and post.next_attempt_at > clock[0]  # backoff, not the next tick
            clock[0] = post.next_attempt_at
    assert post.status == "failed" and post.error.startswith(f"gave up after {posts.MAX_ATTEMPTS} attempts")
    assert posts.publish(svc.Session, svc.settings, client, good, token="g").status == "posted"
    assert client.published == [good]


def test_a_transport_error_is_still_the_network_s_word_not_an_unexpected_one(make_settings, tmp_path):
    svc = newsroom(make_settings, tmp_path, [GOOD])

    class Refusing(Flaky):
        def publish(self, request):
            raise TransportError("403 forbidden: this account may not post links", permanent=True, code=403)

    with transaction(svc.Session) as session:
        (post_id,) = posts.plan(session, svc.settings)
    post = posts.publish(svc.Session, svc.settings, Refusing(""), post_id, token="t")
    assert post.status == "failed" and post.attempts == 1 and not post.uncertain


# ── the ingest lane ──────────────────────────────────────────────────────────


RSS = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>The Newsroom</title><link>https://news.example/</link>
{items}
</channel></rss>"""
ITEM = ("<item><title>{title}</title><link>https://news.example/{slug}/</link><guid>https://news.example/{slug}/</guid>"
        "<description>&lt;p&gt;{title} happened today.&lt;/p&gt;</description></item>")


def test_one_item_the_reader_breaks_on_is_skipped_and_said_on_the_feed_and_the_others_are_stored(
        make_settings, tmp_path, feed_server, monkeypatch):
    """A bug nobody foresaw in reading one item (here: made to happen) used to fail the whole feed at every
    poll: no story of it, ever. Now that item alone is skipped, and the feed says which and why."""
    from syndicate.ingest import documents, feeds
    from syndicate.models import Feed

    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'i.db'}"))
    items = "\n".join(ITEM.format(title=title, slug=title.lower().replace(" ", "-"))
                      for title in ("Harbour reopens", "Poisoned item", "Council votes"))
    url = feed_server.serve("/feed/", RSS.format(items=items).encode())
    real = documents._entry

    def breaks_on_one(entry, *args):
        if entry.get("title") == "Poisoned item":
            raise RecursionError("maximum recursion depth exceeded")
        return real(entry, *args)

    monkeypatch.setattr(documents, "_entry", breaks_on_one)
    with transaction(svc.Session) as session:
        feed = feeds.add_feed(session, url)
        result = feeds.poll(session, feed, svc.settings)
        assert result.status == "ok" and len(result.new_article_ids) == 2
        stored = sorted(session.scalars(select(Article.title)))
        polled = session.get(Feed, feed.id)
        assert stored == ["Council votes", "Harbour reopens"]
        assert polled.error_count == 0  # the poll was fine: the feed is not counted as failing
        assert "1 item(s) could not be read and were skipped: 'Poisoned item': RecursionError" in polled.last_error


# ── a database that fails mid-task: the same task again, not the 15-minute sweep ──


class DatabaseAway:
    """Raises the OperationalError a lost connection gives, the first `times` calls; then calls through."""

    def __init__(self, real, times: int = 1):
        self.real, self.times = real, times

    def __call__(self, *args, **kwargs):
        if self.times:
            self.times -= 1
            raise OperationalError("UPDATE …", None, Exception("server closed the connection unexpectedly"))
        return self.real(*args, **kwargs)


def test_a_post_whose_database_fails_mid_publish_is_published_by_the_same_task_again(make_settings, tmp_path,
                                                                                     monkeypatch):
    svc = newsroom(make_settings, tmp_path, [GOOD])
    with transaction(svc.Session) as session:
        (post_id,) = posts.plan(session, svc.settings)
    monkeypatch.setattr(posts, "publish", DatabaseAway(posts.publish))
    assert tasks.publish_post.apply(args=(post_id,)).get() == "posted"  # eager: the retry runs at once
    assert by_url(svc)[GOOD].status == "posted"


def test_an_import_whose_database_fails_mid_way_is_not_marked_failed_and_goes_on(make_settings, tmp_path,
                                                                                 monkeypatch):
    from syndicate.models import SubscriberImport
    from syndicate.newsletters import lists
    from syndicate.subscribers import csv_files, uploads

    svc = configured(make_settings(database_url=f"sqlite:///{tmp_path / 'i.db'}"), eager=True)
    with transaction(svc.Session) as session:
        daily = lists.add_newsletter(session, slug="daily", name="Daily", from_address="news@example.com")
        data = "email\n" + "".join(f"reader{i}@example.org\n" for i in range(1200))  # three chunks of 500
        import_id = uploads.start_import(session, "ada", "list.csv", data, [daily.id], confirmed=True,
                                         force=False).id
    real = csv_files.import_chunk
    calls = []

    def away_on_the_second_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OperationalError("INSERT …", None, Exception("database is locked"))
        return real(*args, **kwargs)

    monkeypatch.setattr(csv_files, "import_chunk", away_on_the_second_chunk)
    assert tasks.import_subscribers.apply(args=(import_id,)).get() == "done"
    with transaction(svc.Session) as session:
        job = session.get(SubscriberImport, import_id)
        assert (job.status, job.done, job.error) == ("done", 1200, None)
    assert len(calls) == 4  # the second chunk failed once, and went again
