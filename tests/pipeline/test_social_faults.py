"""A post whose answer is lost is on the network once, and its ledger row says what is known.

Each network has its own way to recognise a retry: Mastodon's idempotency key answers it with the first
status; Bluesky's record key (kept on the row) makes the PDS refuse it and lets us find our record; X keeps
nothing, so a retry X calls a duplicate is `ambiguous` — probably posted, never posted twice, never skipped.

Through `pace.dispatch`/`posts.publish` with the real clients (tweepy talking to `responses`, atproto to
`respx`), and with a real worker process killed mid-post on a real Redis, against servers over real HTTP:
a Mastodon-like one here, and bench/chaos_peers' X (at its real host, through a local HTTPS proxy) and PDS.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import requests
import responses
import respx
from test_faults import workers  # noqa: F401 — the fixture
from urllib3.exceptions import ProtocolError

from conftest import configured, wait_for
from syndicate import tasks
from syndicate.db import transaction
from syndicate.models import Article, Post, utcnow
from syndicate.social import accounts, pace, posts
from syndicate.social.clients.base import record_key

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from chaos_peers import SocialPeers  # noqa: E402 — the fake X and PDS of the chaos run

TWEETS = "https://api.twitter.com/2/tweets"
DUPLICATE = {"detail": "You are not allowed to create a Tweet with duplicate content.", "status": 403,
             "title": "Forbidden", "type": "about:blank"}
X_CREDENTIALS = dict(consumer_key="ck", consumer_secret="cs", access_token="1234-newsroom", access_token_secret="ats")
PDS = "https://pds.example"
HANDLE, DID = "newsroom.example", "did:plc:newsroom7abcdefghijklmno"


class Instance:
    """Statuses by idempotency key, as Mastodon keeps them: a retry with the same key gets the same status."""

    def __init__(self, stall_first: bool):
        self.statuses: dict[str, dict] = {}
        self.requests = 0
        self.stall_first, self.stalled = stall_first, threading.Event()
        instance = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                key = self.headers.get("Idempotency-Key")
                instance.requests += 1
                if key not in instance.statuses:
                    number = len(instance.statuses) + 1
                    instance.statuses[key] = {"id": str(number), "url": f"{instance.url}/@news/{number}",
                                              "content": body.decode()}
                    if instance.stall_first and number == 1:
                        instance.stalled.set()  # posted, and the worker never hears so
                        threading.Event().wait(60)
                        return
                answer = json.dumps(instance.statuses[key]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def instance():
    server = Instance(stall_first=True)
    yield server
    server.close()


def newsroom(redis_url, make_settings, tmp_path):
    """Services on a SQLite database with the Redis broker, and the environment a worker process gets."""
    options = dict(database_url=f"sqlite:///{tmp_path / 'social.db'}", broker_url=redis_url)
    svc = configured(make_settings(**options))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNDICATE_")}
    env.update(SYNDICATE_DATA_DIR=str(tmp_path / "data"), SYNDICATE_SECRET_KEY="test-secret",
               SYNDICATE_BASE_URL="http://testserver", SYNDICATE_ALLOW_PRIVATE_FEEDS="1")
    env.update({f"SYNDICATE_{k.upper()}": str(v) for k, v in options.items()})
    return svc, env


def one_post(svc, network: str, settings: dict, credentials: dict, now: datetime | None = None) -> int:
    """One live account of `network` and one new story: its post, planned and dispatched."""
    now = now or utcnow()
    with transaction(svc.Session) as session:
        account = accounts.add(session, svc.settings.secret_key, f"{network}-news", network,
                               dict(window="always", max_age=0, **settings), credentials)
        account.created_at = now - timedelta(minutes=1)
        session.add(Article(identity="one", url="https://news.example/one/", title="One story, posted once",
                            lead="It happened.", content_hash="0" * 64, categories=[], published_at=now,
                            first_seen_at=now))
        posts.plan(session, svc.settings, now)
        [post_id] = pace.dispatch(session, svc.settings, now)
    return post_id


def test_a_worker_killed_mid_post_leaves_one_post(redis_url, make_settings, tmp_path, instance, workers):  # noqa: F811
    svc, env = newsroom(redis_url, make_settings, tmp_path)
    post_id = one_post(svc, "mastodon", dict(instance=instance.url), dict(access_token="token"))
    worker = workers(env, queue="social")
    tasks.publish_post.delay(post_id)

    assert instance.stalled.wait(60), "the worker never posted"
    worker.kill_pool_process()  # the status exists; the worker that made it is gone before the answer

    def settled():
        with transaction(svc.Session) as session:
            return session.get(Post, post_id).status == "posted"
    wait_for(settled, 60, "the redelivered task to record the post")
    with transaction(svc.Session) as session:
        post = session.get(Post, post_id)
        assert (post.remote_id, post.remote_url) == ("1", f"{instance.url}/@news/1")
    assert len(instance.statuses) == 1  # one post on the network
    assert instance.requests == 2  # the retry carried the same idempotency key


# ── the same faults, through dispatch and publish with the real clients ─────


@pytest.fixture
def svc(make_settings, tmp_path):
    return configured(make_settings(database_url=f"sqlite:///{tmp_path / 'faults.db'}"), eager=True)


def attempt(svc, post_id: int) -> Post:
    """What the publishing task does with a dispatched post: the account's live client, then publish."""
    with transaction(svc.Session) as session:
        client = svc.social_client(session.get(Post, post_id).account)
    return posts.publish(svc.Session, svc.settings, client, post_id, token=f"task-{utcnow().timestamp()}")


def dispatched(svc, at: datetime) -> list[int]:
    with transaction(svc.Session) as session:
        return pace.dispatch(session, svc.settings, at)


def reload(svc, post_id: int) -> Post:
    with transaction(svc.Session) as session:
        post = session.get(Post, post_id)
        session.expunge(post)
        return post


@pytest.mark.parametrize("lost", [
    requests.ReadTimeout("HTTPSConnectionPool(host='api.twitter.com', port=443): Read timed out. (read timeout=20)"),
    requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset"))),
], ids=["read-timeout", "connection-reset"])
def test_x_a_post_whose_answer_was_lost_is_ambiguous_when_x_calls_the_retry_a_duplicate(svc, lost):
    """X keeps no idempotency key: the POST reached X and the answer never came back (a timeout, a line
    reset), so the retry hears "duplicate content". The post is out there: `ambiguous`, never posted twice,
    never `skipped` as a duplicate on a first try is."""
    now = utcnow()
    post_id = one_post(svc, "x", {}, X_CREDENTIALS, now)

    with responses.RequestsMock() as x:
        x.add(responses.POST, TWEETS, body=lost)
        x.add(responses.POST, TWEETS, status=403, json=DUPLICATE)
        first = attempt(svc, post_id)
        assert (first.status, first.uncertain, first.attempts) == ("pending", True, 1)
        assert dispatched(svc, now + timedelta(seconds=1)) == []  # the retry waits out its backoff
        assert dispatched(svc, now + timedelta(hours=1)) == [post_id]
        second = attempt(svc, post_id)
        assert len(x.calls) == 2

    assert second.status == "ambiguous" and "probably posted" in second.error
    assert second.posted_at is not None and second.remote_id is None
    assert dispatched(svc, now + timedelta(days=1)) == []  # settled: never tried a third time


class Pds:
    """A PDS behind respx that keeps records by key, as the reference PDS does: a create under a key in use is
    a bare 500 (atproto#3718), getRecord finds the record. With `lose_first`, the first create is stored and
    its answer lost (a read timeout)."""

    def __init__(self, mock, lose_first: bool = False):
        self.records: dict[str, dict] = {}
        self.creates: list[str] = []
        self.lose_first = lose_first
        mock.post("/xrpc/com.atproto.server.createSession").mock(side_effect=self._session)
        mock.post("/xrpc/com.atproto.repo.createRecord").mock(side_effect=self._create)
        mock.get("/xrpc/com.atproto.repo.getRecord").mock(side_effect=self._get)

    @staticmethod
    def _session(request):
        def part(data: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
        exp = int((datetime.now(UTC) + timedelta(hours=2)).timestamp())
        token = f"{part({'alg': 'ES256K'})}.{part({'sub': DID, 'exp': exp})}.sig"
        return httpx.Response(200, json={"did": DID, "handle": HANDLE, "accessJwt": token, "refreshJwt": token})

    def _create(self, request):
        sent = json.loads(request.content)
        rkey = sent["rkey"]
        self.creates.append(rkey)
        if rkey in self.records:
            return httpx.Response(500, json={"error": "InternalServerError", "message": "Internal Server Error"})
        self.records[rkey] = sent["record"]
        if self.lose_first and len(self.creates) == 1:
            raise httpx.ReadTimeout("The read operation timed out", request=request)
        return httpx.Response(200, json={"uri": f"at://{DID}/app.bsky.feed.post/{rkey}", "cid": "bafyrei" + "a" * 52})

    def _get(self, request):
        rkey = request.url.params["rkey"]
        if rkey not in self.records:
            return httpx.Response(400, json={"error": "RecordNotFound", "message": "Could not locate record"})
        return httpx.Response(200, json={"uri": f"at://{DID}/app.bsky.feed.post/{rkey}", "cid": "bafyrei" + "a" * 52,
                                         "value": self.records[rkey]})


BLUESKY = dict(handle=HANDLE, service=PDS)


def test_bluesky_a_record_stored_before_its_answer_was_lost_is_found_by_the_retry_and_posted_once(svc):
    now = utcnow()
    post_id = one_post(svc, "bluesky", BLUESKY, dict(app_password="app-pass"), now)

    with respx.mock(base_url=PDS, assert_all_called=False) as mock:
        pds = Pds(mock, lose_first=True)
        first = attempt(svc, post_id)
        assert (first.status, first.uncertain) == ("pending", True)
        assert dispatched(svc, now + timedelta(hours=1)) == [post_id]
        second = attempt(svc, post_id)

    [rkey] = pds.records
    assert pds.creates == [rkey, rkey]  # the retry carried the same record key, and was refused
    assert second.status == "posted" and second.payload["rkey"] == rkey
    assert (second.remote_id, second.remote_url) == (f"at://{DID}/app.bsky.feed.post/{rkey}",
                                                     f"https://bsky.app/profile/{HANDLE}/post/{rkey}")
    assert dispatched(svc, now + timedelta(days=1)) == []


def test_bluesky_another_post_under_the_record_key_fails_the_post_with_the_reason_not_marks_it_posted(svc):
    """As when two posts of one batch shared a key (post ids 1,024 apart, before issue 19): the record there
    is another story's. The post is failed with the reason, never recorded as posted under someone else's URL."""
    now = utcnow()
    post_id = one_post(svc, "bluesky", BLUESKY, dict(app_password="app-pass"), now)
    with transaction(svc.Session) as session:
        post = session.get(Post, post_id)
        rkey = record_key(post.id, post.created_at)  # the key its first attempt takes

    with respx.mock(base_url=PDS, assert_all_called=False) as mock:
        pds = Pds(mock)
        pds.records[rkey] = {"$type": "app.bsky.feed.post", "text": "Another story\nnews.example/other",
                             "createdAt": "2030-01-02T03:04:06Z"}
        post = attempt(svc, post_id)

    assert (post.status, post.remote_id, post.posted_at) == ("failed", None, None)
    assert "another post under this post's record key" in post.error and "Re-share" in post.error


# ── a worker killed while X and the PDS hold the answer ─────────────────────


@pytest.fixture
def peers(tmp_path):
    """The chaos run's fake X (through its HTTPS proxy) and PDS, on this machine."""
    fakes = SocialPeers(tmp_path / "peers")
    fakes.start()
    yield fakes
    fakes.stop()


def killed_mid_post(svc, env, workers, peers, network: str, post_id: int) -> Post:  # noqa: F811
    """The post goes to a real worker; the network stores it and holds the answer; the pool process is
    killed; the task, delivered again, tries once more. The post as the ledger then has it."""
    peers.fault(network, "taken-then-timeout", 120)
    worker = workers({**env, **peers.worker_env}, queue="social")
    tasks.publish_post.delay(post_id)
    wait_for(lambda: len(peers.posts(network)) == 1, 60, f"{network} to store the post")
    worker.kill_pool_process()  # the post is out; the worker that sent it is gone before the answer
    peers.fault(network, None, 0)

    def settled():
        with transaction(svc.Session) as session:
            return session.get(Post, post_id).status not in posts.OPEN
    wait_for(settled, 60, "the redelivered task to record the post")
    assert peers.faults_answered()[(network, "taken-then-timeout")] == 1
    return reload(svc, post_id)


def test_x_a_worker_killed_mid_post_leaves_one_tweet_and_an_ambiguous_post(redis_url, make_settings, tmp_path,
                                                                           peers, workers):  # noqa: F811
    svc, env = newsroom(redis_url, make_settings, tmp_path)
    post_id = one_post(svc, "x", {}, X_CREDENTIALS)

    post = killed_mid_post(svc, env, workers, peers, "x", post_id)

    assert post.status == "ambiguous" and "probably posted" in post.error, post.error
    assert len(peers.posts("x")) == 1  # X refused the second copy as a duplicate


def test_bluesky_a_worker_killed_mid_post_leaves_one_record_and_the_post_posted(redis_url, make_settings, tmp_path,
                                                                                peers, workers):  # noqa: F811
    svc, env = newsroom(redis_url, make_settings, tmp_path)
    post_id = one_post(svc, "bluesky", dict(handle=HANDLE, service=peers.bluesky_url), dict(app_password="pass"))

    post = killed_mid_post(svc, env, workers, peers, "bluesky", post_id)

    [record] = peers.posts("bluesky")  # the retry's create was refused: the key was taken, by this post
    assert (post.status, post.error) == ("posted", None)
    assert post.remote_url == f"https://bsky.app/profile/{HANDLE}/post/{record['key']}"
    assert post.remote_id == record["id"] and post.payload["rkey"] == record["key"]
