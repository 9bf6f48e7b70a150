"""A worker killed mid-post leaves one post at most: a real worker process, a real Redis, and a
Mastodon-like server over real HTTP that keeps the status, then never answers the first request."""

from __future__ import annotations

import json
import os
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_faults import workers  # noqa: F401 — the fixture

from conftest import configured, wait_for
from syndicate import tasks
from syndicate.db import transaction
from syndicate.models import Article, Post, utcnow
from syndicate.social import accounts, posts


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


def test_a_worker_killed_mid_post_leaves_one_post(redis_url, make_settings, tmp_path, instance, workers):  # noqa: F811
    options = dict(database_url=f"sqlite:///{tmp_path / 'social.db'}", broker_url=redis_url)
    svc = configured(make_settings(**options))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNDICATE_")}
    env.update(SYNDICATE_DATA_DIR=str(tmp_path / "data"), SYNDICATE_SECRET_KEY="test-secret",
               SYNDICATE_BASE_URL="http://testserver", SYNDICATE_ALLOW_PRIVATE_FEEDS="1")
    env.update({f"SYNDICATE_{k.upper()}": str(v) for k, v in options.items()})
    now = utcnow()
    with transaction(svc.Session) as session:
        account = accounts.add(session, svc.settings.secret_key, "masto", "mastodon",
                               dict(instance=instance.url, window="always", max_age=0),
                               dict(access_token="token"))
        account.created_at = now - timedelta(minutes=1)
        session.add(Article(identity="one", url="https://news.example/one/", title="One story, posted once",
                            lead="It happened.", content_hash="0" * 64, categories=[], published_at=now,
                            first_seen_at=now))
        posts.plan(session, svc.settings, now)
        [post_id] = posts.dispatch(session, svc.settings, now)
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
