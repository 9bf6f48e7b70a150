"""What counting clicks costs: the redirect's latency, and a reader's copy with counted links against one without.

    python bench/clicks.py                 # 1,000 redirects each way, 20,000 copies each way
    python bench/clicks.py --requests 5000 --copies 50000

The redirect (GET /r/<edition>/<n>.<mark>) is asked --requests times in one process through Starlette's
TestClient (the app's own cost: signature, one SELECT, one UPDATE, a commit on SQLite) and as many times
over HTTP from a keep-alive client to the app under uvicorn on localhost; each request counts (the dedupe
window is set to 0, so every one writes: the worst case). Then MessageFactory builds --copies readers' copies
of the same 4-story edition with and without counted links: the per-recipient work is the same, only the
HTML differs. Prints median and p99; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"median {statistics.median(ordered) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--copies", type=int, default=20_000)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="syndicate-clicks-"))
    os.environ.update({"SYNDICATE_DATA_DIR": str(folder), "SYNDICATE_SECRET_KEY": "bench",
                       "SYNDICATE_BASE_URL": "http://127.0.0.1", "SYNDICATE_DATABASE_URL": f"sqlite:///{folder}/b.db"})
    import httpx
    import uvicorn
    from starlette.testclient import TestClient

    from syndicate import db, services
    from syndicate.db import transaction
    from syndicate.delivery import sending
    from syndicate.delivery.copies import MessageFactory
    from syndicate.models import Article, Edition, utcnow
    from syndicate.newsletters import lists
    from syndicate.subscribers import consent
    from syndicate.web.app import create_app

    svc = services.current()
    db.upgrade(svc.engine)
    now = utcnow()
    edition_ids = {}
    with transaction(svc.Session) as session:  # two newsletters, the same four stories in an edition of each
        made = {counting: lists.add_newsletter(session, slug=slug, name=slug, from_address="news@example.com",
                                               cron=None, now=now - timedelta(hours=1), count_clicks=counting)
                for counting, slug in ((True, "counted"), (False, "plain"))}
        for i in range(4):
            url = f"https://news.example.com/2026/12/story-{i}/?utm_source=feed"
            session.add(Article(identity=url, url=url, title=f"Story {i} of the day, in a headline of some length",
                                lead="A lead of a sentence or two, as a story's first lines are. " * 3,
                                content_hash=url, published_at=now - timedelta(minutes=i), first_seen_at=now))
        session.flush()
        for counting, newsletter in made.items():
            consent.subscribe(session, f"reader-{newsletter.slug}@example.org", [newsletter.id], confirmed=True)
            edition_ids[counting] = sending.cut(session, newsletter, svc.settings, kind="one-off").edition.id
    with transaction(svc.Session) as session:
        html = session.get(Edition, edition_ids[True]).html
    links = list(dict.fromkeys(re.findall(r"http://127\.0\.0\.1(/r/\d+/\d+\.[\w-]{16})", html)))
    print(f"edition with counted links: {len(links)} story links, {len(html.encode()):,} bytes HTML")

    app = create_app()
    app.state.recent_clicks.window = 0  # every request counts: the worst case, a write each
    with TestClient(app, follow_redirects=False) as client:
        for link in links:  # warm up
            client.get(link)
        samples = []
        for n in range(args.requests):
            started = time.perf_counter()
            answer = client.get(links[n % len(links)])
            samples.append(time.perf_counter() - started)
            assert answer.status_code == 302
    print(f"redirect, {args.requests:,} GETs in process (TestClient): {percentiles(samples)}")

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False) as client:
        for link in links:
            client.get(link)
        samples = []
        for n in range(args.requests):
            started = time.perf_counter()
            answer = client.get(links[n % len(links)])
            samples.append(time.perf_counter() - started)
            assert answer.status_code == 302
        print(f"redirect, {args.requests:,} GETs over HTTP (uvicorn, keep-alive): {percentiles(samples)}")
        samples = []
        for n in range(args.requests):
            started = time.perf_counter()
            client.head(links[n % len(links)])
            samples.append(time.perf_counter() - started)
        print(f"redirect, {args.requests:,} HEADs over HTTP (read only, nothing counted): {percentiles(samples)}")
    server.should_exit = True

    factories, best = {}, {}
    for counting in (False, True):
        with transaction(svc.Session) as session:
            edition = session.get(Edition, edition_ids[counting])
            factories[counting] = MessageFactory(svc.settings, edition.newsletter, edition)
        best[counting] = float("inf")
    for _ in range(5):  # best of five, the two taking turns: the machine is shared
        for counting, factory in factories.items():
            started = time.perf_counter()
            for n in range(args.copies):
                factory(n + 1, n + 1, f"reader{n}@example.org", None)
            best[counting] = min(best[counting], time.perf_counter() - started)
    for counting, factory in factories.items():
        size = len(factory(1, 1, "reader@example.org", None).data)
        print(f"a reader's copy, {'counted links' if counting else 'story links  '}: "
              f"{best[counting] / args.copies * 1e6:.1f} µs each (best of 5 × {args.copies:,}), {size:,} bytes")


if __name__ == "__main__":
    main()
