"""An edition checked before it goes, on the message exactly as a recipient gets it: what Gmail clips,
whether a reader can leave, and — on demand only, since it goes out to other sites — whether its links
answer."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from email.message import EmailMessage
from html.parser import HTMLParser
from urllib.parse import urldefrag, urlsplit

import httpx

from syndicate.config import Settings
from syndicate.delivery.copies import preview
from syndicate.errors import FeedError
from syndicate.ingest import fetch
from syndicate.models import Edition
from syndicate.newsletters.rendering import GMAIL_CLIPS_AT

MAX_LINKS = 100  # checked per request; an edition with more says how many were left out
WORKERS = 8  # links asked at once
DEADLINE = 10.0  # seconds for the whole check: an editor waits for it


def parts(message: EmailMessage) -> tuple[str, str]:
    """The HTML and text parts of a message."""
    html, text = (message.get_body(preferencelist=(kind,)) for kind in ("html", "plain"))
    return (html.get_content() if html else ""), (text.get_content() if text else "")


def warnings(settings: Settings, edition: Edition) -> list[str]:
    """What would hurt this edition in readers' inboxes, measured on the message as sent. (Edition.warnings
    holds the render's own measure of the stored HTML; this one stands in for it on the desk.)"""
    if not edition.html:
        return []
    template = edition.newsletter.template
    message = preview(settings, edition.newsletter, edition)
    html, text = parts(message)
    found = []
    size = len(html.encode())
    if size > GMAIL_CLIPS_AT:
        found.append(f"the HTML is {size / 1024:.0f} KB as sent: Gmail clips messages over "
                     f"{GMAIL_CLIPS_AT // 1024} KB and hides the rest, unsubscribe link included; "
                     "remove stories or shorten leads")
    # The reader's own unsubscribe link is the https one of the List-Unsubscribe header; it must be in
    # both parts too, for mail programs that don't offer the header's button.
    listed = re.findall(r"<(https?://[^>]+)>", message.get("List-Unsubscribe", ""))
    if not listed or "List-Unsubscribe-Post" not in message:
        found.append("the message has no one-click List-Unsubscribe header: Gmail and Yahoo require it "
                     "of bulk senders")
    for body, kind, name in ((html, "HTML", "body.html"), (text, "text", "body.txt")):
        if not listed or listed[0] not in body:
            found.append(f"the {kind} part has no unsubscribe link: put {{{{ unsubscribe_url }}}} in "
                         f"email/{template}/{name}")
    return found


# ── do the links answer? ─────────────────────────────────────────────────────


@dataclass
class LinkReport:
    checked: int = 0
    broken: list[dict] = field(default_factory=list)  # url, status (the final one) or error
    left_out: int = 0  # beyond MAX_LINKS


class _Links(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        href = dict(attrs).get("href") if tag == "a" else None
        if href:
            self.found.append(href.strip())


def links(html: str, settings: Settings) -> list[str]:
    """The distinct http(s) links of an edition, in order; not our own pages (the reader's personal
    links, and a web view that exists only once the edition goes out)."""
    parser = _Links()
    parser.feed(html)
    own = settings.base_url.rstrip("/")
    wanted = []
    for href in parser.found:
        url = urldefrag(href)[0]
        if urlsplit(url).scheme.lower() in ("http", "https") and not (url == own or url.startswith(own + "/")):
            wanted.append(url)
    return list(dict.fromkeys(wanted))


def check_links(settings: Settings, edition: Edition, deadline: float = DEADLINE) -> LinkReport:
    """Ask every link of the edition as sent, a few at once, all within `deadline` seconds; report those
    that answer 4xx/5xx, can't be reached, or don't answer in time. Through fetch's guarded client:
    addresses on our own network are refused unless SYNDICATE_ALLOW_PRIVATE_FEEDS is set."""
    html, _ = parts(preview(settings, edition.newsletter, edition)) if edition.html else ("", "")
    urls = links(html, settings)
    report = LinkReport(checked=min(len(urls), MAX_LINKS), left_out=max(len(urls) - MAX_LINKS, 0))
    urls = urls[:MAX_LINKS]
    if not urls:
        return report
    ends = time.monotonic() + deadline
    http = fetch.client(settings.allow_private_feeds, deadline, httpx.Limits(max_connections=WORKERS))
    pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="link-check")
    asked = {url: pool.submit(_answer, http, url, ends) for url in urls}
    wait(asked.values(), timeout=deadline + 1)
    pool.shutdown(wait=False, cancel_futures=True)
    http.close()  # a server still dripping its answer is cut off here; its thread's error is not read
    for url, future in asked.items():
        if not future.done() or future.cancelled():
            report.broken.append(dict(url=url, status=None, error=f"no answer within {deadline:.0f} s"))
        elif (answer := future.result()) is not None:
            report.broken.append(dict(url=url, **answer))
    return report


def _answer(http: httpx.Client, url: str, ends: float) -> dict | None:
    """None if the link answers (after redirects) with a success; else its status or error. Only the
    status is read: fetch.guarded_get would read the whole body, and a link may lead to a 50 MB file."""
    left = ends - time.monotonic()
    if left <= 0:
        return dict(status=None, error="not asked: the time for the check ran out")
    try:
        with http.stream("GET", url, follow_redirects=True,
                         timeout=httpx.Timeout(left, connect=min(5.0, left))) as response:
            status = response.status_code
    except (httpx.HTTPError, httpx.InvalidURL, FeedError) as e:
        return dict(status=None, error=str(e) or type(e).__name__)
    return None if status < 400 else dict(status=status, error=None)
