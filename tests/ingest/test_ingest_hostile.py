"""feed → article against servers that misbehave, for real: each is a real local HTTP server.

Slow drips, bodies past the size cap, gzip bombs, entity-expansion bombs, redirects into our
own network, 410 and 429. A poll always ends, within its deadline, with the failure recorded
on the feed, nothing half-stored, and the other feeds of the run unaffected.
"""

from __future__ import annotations

import gzip
import io
import ipaddress
import socket
import time
import tracemalloc
import zlib
from datetime import UTC, datetime, timedelta

import httpcore
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from syndicate.db import transaction
from syndicate.errors import FeedError
from syndicate.ingest import documents, feeds, fetch
from syndicate.models import Article, Feed

T0 = datetime(2030, 1, 6, 7, 0, tzinfo=UTC)
RSS = {"Content-Type": "application/rss+xml"}


def add(svc, url: str) -> int:
    with transaction(svc.Session) as session:
        return feeds.add_feed(session, url).id


def poll(svc, feed_id: int, settings=None, now: datetime = T0) -> feeds.PollResult:
    with transaction(svc.Session) as session:
        return feeds.poll(session, session.get(Feed, feed_id), settings or svc.settings, now)


def feed_row(svc, feed_id: int) -> Feed:
    with transaction(svc.Session) as session:
        return session.get(Feed, feed_id)


def article_count(svc) -> int:
    with transaction(svc.Session) as session:
        return session.scalar(select(func.count(Article.id)))


def one_story(n: int) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>Feed {n}</title>'
        f"<link>https://site{n}.example/</link><description>d</description>"
        f"<item><title>Story {n}</title><link>https://site{n}.example/story</link><guid>site{n}-story</guid>"
        f"<description>Story number {n}. It is short.</description></item></channel></rss>"
    ).encode()


def dripping(interval: float = 0.5, longest: float = 12.0, in_headers: bool = False):
    """An answer that arrives a byte every `interval` seconds, for at most `longest` seconds.

    With `in_headers` the drip happens before the headers are complete; otherwise the
    headers arrive at once and the body drips.
    """

    def answer(handler):
        started = time.monotonic()
        out = handler.wfile
        try:
            if in_headers:
                out.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nX-Padding: ")
            else:
                out.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Length: 100000\r\n\r\n"
                          b'<?xml version="1.0"?><rss version="2.0"><channel>')
            out.flush()
            while time.monotonic() - started < longest:
                time.sleep(interval)
                out.write(b"a" if in_headers else b" ")
                out.flush()
            if in_headers:
                out.write(b"\r\nContent-Length: 0\r\n\r\n")
                out.flush()
        except OSError:
            pass  # the client hung up: what a poll with a deadline does
        # We answered by hand: what the server writes after us goes nowhere.
        handler.wfile = io.BytesIO()
        handler.close_connection = True
        return 200, {}, b""

    return answer


# ── slow servers ─────────────────────────────────────────────────────────────


def test_it_gives_up_on_a_server_that_drips_its_body_within_the_deadline(svc, feed_server, make_settings):
    feed_server.routes["/drip.xml"] = (200, {}, dripping())
    feed_id = add(svc, feed_server.base + "/drip.xml")

    started = time.monotonic()
    result = poll(svc, feed_id, make_settings(feed_timeout=2))
    elapsed = time.monotonic() - started

    assert elapsed < 10, f"the poll took {elapsed:.1f} s with a 2 s deadline"
    assert result.status == "error"
    assert "deadline" in result.error
    feed = feed_row(svc, feed_id)
    assert feed.last_error == result.error
    assert feed.error_count == 1
    assert feed.next_fetch_at > T0
    assert article_count(svc) == 0


def test_it_gives_up_on_a_server_that_drips_its_headers_within_the_deadline(svc, feed_server, make_settings):
    feed_server.routes["/drip.xml"] = (200, {}, dripping(interval=0.5, longest=5.0, in_headers=True))
    feed_id = add(svc, feed_server.base + "/drip.xml")

    started = time.monotonic()
    result = poll(svc, feed_id, make_settings(feed_timeout=1))
    elapsed = time.monotonic() - started

    assert result.status == "error"
    assert elapsed < 3.5, f"the poll took {elapsed:.1f} s with a 1 s deadline"
    assert "deadline" in result.error


def test_it_does_not_let_one_slow_server_hold_up_a_run_of_thirty_feeds(svc, feed_server, make_settings):
    timeout = 2
    settings = make_settings(feed_timeout=timeout)
    ids = []
    for n in range(29):
        ids.append(add(svc, feed_server.serve(f"/fast/{n}.xml", one_story(n))))
    feed_server.routes["/slow.xml"] = (200, {}, dripping())
    slow = add(svc, feed_server.base + "/slow.xml")
    ids.insert(7, slow)
    seen = []

    started = time.monotonic()
    results = feeds.poll_many(svc.Session, settings, ids, progress=seen.append)
    elapsed = time.monotonic() - started

    assert elapsed < 30 * timeout / 3, f"30 feeds took {elapsed:.1f} s"
    assert [r.feed_id for r in results] == ids
    assert len(seen) == 30
    by_id = {r.feed_id: r for r in results}
    assert by_id[slow].status == "error"
    assert "deadline" in by_id[slow].error
    assert [by_id[i].status for i in ids if i != slow] == ["ok"] * 29
    assert all(len(by_id[i].new_article_ids) == 1 for i in ids if i != slow)
    assert article_count(svc) == 29


# ── bodies too big ───────────────────────────────────────────────────────────


def test_it_stops_reading_a_body_larger_than_the_size_cap(svc, feed_server, make_settings, sample_feed):
    cap = 100_000
    huge = sample_feed.replace(b"</channel>", b"<!--" + b"x" * 20_000_000 + b"--></channel>")
    feed_id = add(svc, feed_server.serve("/huge.xml", huge))

    result = poll(svc, feed_id, make_settings(feed_max_bytes=cap))

    assert result.status == "error"
    assert "larger than 100,000 bytes" in result.error
    assert feed_row(svc, feed_id).last_error == result.error
    assert article_count(svc) == 0


def gzip_bomb(inflated_mb: int) -> bytes:
    """A gzip body of a few tens of KB that inflates to `inflated_mb` megabytes of spaces."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: with a gzip header
    megabyte = b" " * 1_000_000
    parts = [deflate.compress(b'<?xml version="1.0"?><rss version="2.0"><channel>')]
    parts += [deflate.compress(megabyte) for _ in range(inflated_mb)]
    return b"".join(parts + [deflate.flush()])


def peak_memory_of(call) -> tuple[object, int]:
    tracemalloc.start()
    try:
        value = call()
        return value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_it_refuses_a_gzip_bomb_at_the_size_cap_counted_after_inflating(svc, feed_server, make_settings):
    cap = 1_000_000
    bomb = gzip_bomb(inflated_mb=64)
    assert len(bomb) < cap / 10  # small on the wire: only the inflated size is over the cap
    feed_id = add(svc, feed_server.serve("/bomb.xml", bomb, **{"Content-Encoding": "gzip"}))

    result = poll(svc, feed_id, make_settings(feed_max_bytes=cap))

    assert result.status == "error"
    assert "larger than 1,000,000 bytes" in result.error
    assert feed_row(svc, feed_id).last_error == result.error
    assert article_count(svc) == 0


def test_it_refuses_a_gzip_bomb_in_memory_proportional_to_the_cap(svc, feed_server, make_settings, sample_feed):
    cap = 1_000_000
    settings = make_settings(feed_max_bytes=cap)
    normal = add(svc, feed_server.serve("/feed.xml", gzip.compress(sample_feed), **{"Content-Encoding": "gzip"}))
    bomb = add(svc, feed_server.serve("/bomb.xml", gzip_bomb(inflated_mb=64), **{"Content-Encoding": "gzip"}))
    _, baseline = peak_memory_of(lambda: poll(svc, normal, settings))

    result, peak = peak_memory_of(lambda: poll(svc, bomb, settings))

    assert result.status == "error"
    assert peak < baseline + 5 * cap, f"refusing the bomb took {peak:,} bytes at its peak ({baseline:,} normally)"


def test_it_reads_a_gzipped_feed_under_the_cap(svc, feed_server, sample_feed):
    feed_id = add(svc, feed_server.serve("/feed.xml", gzip.compress(sample_feed), **{"Content-Encoding": "gzip"}))

    result = poll(svc, feed_id)

    assert result.status == "ok", result.error
    assert len(result.new_article_ids) == 4


# ── entity bombs ─────────────────────────────────────────────────────────────


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE rss [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<rss version="2.0"><channel><title>&lol9;</title><link>https://lol.example/</link><description>d</description>
<item><title>&lol9;</title><link>https://lol.example/1</link><description>&lol9;</description></item>
</channel></rss>
"""


def test_it_refuses_a_billion_laughs_document_quickly_and_in_little_memory(svc, feed_server):
    feed_id = add(svc, feed_server.serve("/lol.xml", BILLION_LAUGHS))

    started = time.monotonic()
    result, peak = peak_memory_of(lambda: poll(svc, feed_id))
    elapsed = time.monotonic() - started

    assert result.status == "error"
    assert "entities" in result.error
    assert elapsed < 10
    assert peak < 50_000_000
    assert feed_row(svc, feed_id).last_error == result.error
    assert article_count(svc) == 0


def entity_document(doctype_open: str, prefix: str = "", encoding: str = "utf-8") -> bytes:
    """A quadratic-blowup document: one 5 KB entity, used 200 times in a title (1 MB once expanded)."""
    return (
        f'<?xml version="1.0" encoding="{encoding.upper()}"?>\n{prefix}{doctype_open}\n'
        f'<!ENTITY big "{"A" * 5000}">\n]>\n'
        '<rss version="2.0"><channel><title>t</title><link>https://big.example/</link><description>d</description>'
        f'<item><title>{"&big;" * 200}</title><link>https://big.example/1</link><guid>big-1</guid></item>'
        "</channel></rss>"
    ).encode(encoding)


def test_it_refuses_a_quadratic_blowup_document():
    with pytest.raises(FeedError, match="entities"):
        documents.parse(entity_document("<!DOCTYPE rss ["), "https://big.example/feed")


@pytest.mark.parametrize("document", [
    pytest.param(entity_document("<!DOCTYPE rss [", prefix="<!--" + "x" * 5000 + "-->\n"),
                 id="doctype-after-a-5-kb-comment"),
    pytest.param(entity_document("<!DOCTYPE rss [", encoding="utf-16"), id="utf-16-document"),
    pytest.param(entity_document("<!DOCTYPE rss [<!-- ] -->"), id="bracket-in-a-comment-of-the-subset"),
    pytest.param(entity_document('<!DOCTYPE rss SYSTEM "about:a>b" ['), id="angle-bracket-in-the-system-id"),
])
def test_it_refuses_entity_declarations_however_the_doctype_is_dressed(document):
    with pytest.raises(FeedError, match="entities"):
        documents.parse(document, "https://big.example/feed")


def test_it_never_fetches_an_external_dtd_or_entity(svc, feed_server):
    dtd_url = feed_server.serve("/evil.dtd", b'<!ENTITY secret "leaked">', **{"Content-Type": "application/xml-dtd"})
    document = (
        f'<?xml version="1.0"?>\n<!DOCTYPE rss SYSTEM "{dtd_url}">\n'
        '<rss version="2.0"><channel><title>t</title><link>https://x.example/</link><description>d</description>'
        '<item><title>A &secret; title</title><link>https://x.example/1</link></item></channel></rss>'
    ).encode()
    feed_id = add(svc, feed_server.serve("/feed.xml", document))

    poll(svc, feed_id)

    assert [path for path, _ in feed_server.requests] == ["/feed.xml"]
    with transaction(svc.Session) as session:
        assert "leaked" not in "".join(session.scalars(select(Article.title)))


# ── redirects into our own network ───────────────────────────────────────────


@pytest.fixture
def localhost_is_public(monkeypatch):
    """Treat the name `localhost` as a public host; every other name and address is checked for real.

    The test server lives on 127.0.0.1; addressed as `localhost` it passes the guard, addressed
    as `127.0.0.1` it doesn't: a redirect between the two is a redirect from outside to inside.
    """
    real = fetch.public_addresses

    def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == "localhost" else real(host, port)

    monkeypatch.setattr(fetch, "public_addresses", resolve)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_it_refuses_a_redirect_into_a_private_address_with_private_feeds_off(
        svc, feed_server, make_settings, sample_feed, localhost_is_public, status):
    port = feed_server.httpd.server_address[1]
    feed_server.serve("/inside.xml", sample_feed)
    feed_server.serve("/outside.xml", b"", status=status, Location=f"http://127.0.0.1:{port}/inside.xml")
    start = f"http://localhost:{port}/outside.xml"
    feed_id = add(svc, start)

    result = poll(svc, feed_id, make_settings(allow_private_feeds=0))

    assert result.status == "error"
    assert "SYNDICATE_ALLOW_PRIVATE_FEEDS" in result.error
    assert "127.0.0.1" in result.error
    assert [path for path, _ in feed_server.requests] == ["/outside.xml"]
    assert article_count(svc) == 0
    feed = feed_row(svc, feed_id)
    assert feed.url == start
    assert feed.last_error == result.error


def test_it_follows_a_redirect_between_public_addresses_with_private_feeds_off(
        svc, feed_server, make_settings, sample_feed, localhost_is_public):
    port = feed_server.httpd.server_address[1]
    feed_server.serve("/new.xml", sample_feed)
    feed_server.serve("/old.xml", b"", status=301, Location=f"http://localhost:{port}/new.xml")
    feed_id = add(svc, f"http://localhost:{port}/old.xml")

    result = poll(svc, feed_id, make_settings(allow_private_feeds=0))

    assert result.status == "ok", result.error
    assert len(result.new_article_ids) == 4
    assert feed_row(svc, feed_id).url == f"http://localhost:{port}/new.xml"


@pytest.mark.parametrize("url", ["http://0177.0.0.1/", "http://2130706433/feed", "http://0x7f.1/"])
def test_a_stored_feed_on_an_odd_ip_address_fails_its_poll_with_the_reason_and_spares_the_others(
        svc, feed_server, url):
    with transaction(svc.Session) as session:  # stored before feed add refused such hosts
        session.add(odd := Feed(url=url))
        session.flush()
        odd_id = odd.id
    healthy = add(svc, feed_server.serve("/healthy.xml", one_story(1)))

    results = feeds.poll_many(svc.Session, svc.settings, [odd_id, healthy])

    assert [r.status for r in results] == ["error", "ok"]
    assert "IPv4 address written in a short, octal or hexadecimal form" in feed_row(svc, odd_id).last_error
    assert feed_server.requests == [("/healthy.xml", feed_server.requests[0][1])]


def test_a_bug_while_polling_one_feed_is_recorded_on_that_feed_and_spares_the_others(svc, feed_server,
                                                                                     monkeypatch):
    real = documents.read

    def read(body, url, content_type):
        if "broken" in url:
            raise RuntimeError("a parser bug")
        return real(body, url, content_type)

    monkeypatch.setattr(feeds, "read", read)
    broken = add(svc, feed_server.serve("/broken.xml", one_story(1)))
    healthy = add(svc, feed_server.serve("/healthy.xml", one_story(2)))

    results = feeds.poll_many(svc.Session, svc.settings, [broken, healthy])

    assert [r.status for r in results] == ["error", "ok"]
    feed = feed_row(svc, broken)
    assert feed.last_error == "internal error: RuntimeError: a parser bug"
    assert feed.error_count == 1 and feed.next_fetch_at > feed.last_fetched_at  # backed off like any failure


def test_a_redirect_to_an_odd_ip_address_is_refused_with_the_reason(svc, feed_server):
    feed_id = add(svc, feed_server.serve("/feed.xml", b"", status=302, Location="http://0x7f.1/feed.xml"))

    result = poll(svc, feed_id)

    assert result.status == "error"
    assert "redirected to 'http://0x7f.1/feed.xml'" in feed_row(svc, feed_id).last_error
    assert "hexadecimal form" in feed_row(svc, feed_id).last_error


def test_it_gives_up_on_a_redirect_loop(svc, feed_server):
    feed_id = add(svc, feed_server.serve("/loop.xml", b"", status=302, Location="/loop.xml"))

    result = poll(svc, feed_id)

    assert result.status == "error"
    assert "redirects" in result.error
    assert len(feed_server.requests) == fetch.MAX_REDIRECTS + 1


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://ftp.example/feed.xml", "gopher://x.example/"])
def test_it_records_a_redirect_to_a_scheme_it_does_not_fetch_as_a_failed_poll(svc, feed_server, location):
    feed_id = add(svc, feed_server.serve("/feed.xml", b"", status=302, Location=location))
    healthy = add(svc, feed_server.serve("/healthy.xml", one_story(1)))

    results = feeds.poll_many(svc.Session, svc.settings, [feed_id, healthy])

    assert [r.status for r in results] == ["error", "ok"]
    assert feed_row(svc, feed_id).error_count == 1


# ── the address guard itself (no traffic is sent anywhere) ──────────────────


def answer_getaddrinfo(monkeypatch, *addresses: str) -> None:
    def getaddrinfo(host, port, *args, **kwargs):
        infos = []
        for address in addresses:
            if ":" in address:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return infos

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize("address", [
    "10.0.0.1", "10.255.255.254", "172.16.0.1", "172.31.255.255", "192.168.0.1", "192.168.255.254",
    "169.254.169.254", "169.254.0.1", "127.0.0.1", "127.8.9.10", "0.0.0.0", "100.64.0.1",
    "::1", "::", "fc00::1", "fd12:3456:789a::1", "fe80::1", "fe80::1%eth0",
    "::ffff:10.0.0.1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:192.168.1.1",
    # Translated, tunnelled, multicast and reserved: each reaches inside, or nowhere a feed is served.
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::a00:1", "64:ff9b:1::a00:1", "64:ff9b:1::808:808",
    "2002:7f00:1::1", "2002:808:808::1", "2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "::127.0.0.1", "fec0::1", "ff02::1", "ff0e::1", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.255", "192.0.0.8", "2001:db8::1", "3fff::1", "5f00::1",
])
def test_it_refuses_a_host_that_resolves_to_a_private_or_local_address(monkeypatch, address):
    answer_getaddrinfo(monkeypatch, address)

    with pytest.raises(fetch.Refused, match="SYNDICATE_ALLOW_PRIVATE_FEEDS"):
        fetch.public_addresses("feeds.example", 443)


def test_it_accepts_a_public_site_reached_through_nat64_on_an_ipv6_only_host(monkeypatch):
    # DNS64 writes 8.8.8.8 as 64:ff9b::808:808: refusing the whole prefix would cut off every IPv4-only site.
    answer_getaddrinfo(monkeypatch, "64:ff9b::808:808")

    assert fetch.public_addresses("feeds.example", 443) == ["64:ff9b::808:808"]


@given(st.integers(0, 2**32 - 1))
def test_a_nat64_address_is_as_public_as_the_ipv4_address_it_carries(n):
    embedded = ipaddress.IPv4Address(n)
    assert fetch.is_public(ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) + n)) == \
        fetch.is_public(embedded)


@given(st.integers(0, 2**128 - 1))
def test_no_6to4_teredo_multicast_or_reserved_address_is_public(n):
    address = ipaddress.IPv6Address(n)
    if address in ipaddress.ip_network("2002::/16") or address in ipaddress.ip_network("2001::/32") \
            or address.is_multicast or address.is_reserved and address not in ipaddress.ip_network("64:ff9b::/96"):
        assert not fetch.is_public(address)


@pytest.mark.parametrize("address", ["64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "ff02::1",
                                     "224.0.0.251", "::127.0.0.1"])
def test_a_feed_whose_host_resolves_to_a_translated_or_multicast_address_is_refused_unconnected(
        svc, make_settings, monkeypatch, address):
    answer_getaddrinfo(monkeypatch, address)
    connected = []

    def connect_tcp(self, host, port, *args, **kwargs):  # nothing leaves this machine, on main or not
        connected.append(host)
        raise httpcore.ConnectError("the test refuses every connection")

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect_tcp)
    feed_id = add(svc, "https://feeds.example/rss")
    healthy = add(svc, "https://other.example/rss")

    result = poll(svc, feed_id, make_settings(allow_private_feeds=0))

    assert result.status == "error"
    assert connected == []
    error = feed_row(svc, feed_id).last_error
    assert f"resolves to {ipaddress.ip_address(address)}, a private or local address" in error
    assert "SYNDICATE_ALLOW_PRIVATE_FEEDS" in error
    assert feed_row(svc, healthy).last_error is None  # the other feed is untouched


def test_it_refuses_a_host_when_any_one_of_its_addresses_is_private(monkeypatch):
    answer_getaddrinfo(monkeypatch, "93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "10.0.0.7")

    with pytest.raises(fetch.Refused, match="10.0.0.7"):
        fetch.public_addresses("feeds.example", 443)


def test_it_accepts_a_host_whose_addresses_are_all_public(monkeypatch):
    answer_getaddrinfo(monkeypatch, "93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")

    assert fetch.public_addresses("feeds.example", 443) == ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]


def test_it_reports_a_host_that_does_not_resolve(monkeypatch):
    def getaddrinfo(host, port, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    with pytest.raises(FeedError, match="cannot resolve 'nowhere.example'"):
        fetch.public_addresses("nowhere.example", 80)


def test_it_connects_to_the_address_it_checked_not_to_a_fresh_lookup(monkeypatch):
    answer_getaddrinfo(monkeypatch, "93.184.215.14")
    backend = fetch.GuardedBackend()
    connected = []

    def connect_tcp(host, port, timeout=None, local_address=None, socket_options=None):
        connected.append((host, port))
        return "a stream"

    monkeypatch.setattr(backend.inner, "connect_tcp", connect_tcp)

    assert backend.connect_tcp("feeds.example", 443).inner == "a stream"
    assert connected == [("93.184.215.14", 443)]


def test_it_never_opens_a_connection_to_a_refused_address(monkeypatch):
    answer_getaddrinfo(monkeypatch, "169.254.169.254")
    backend = fetch.GuardedBackend()

    def connect_tcp(*args, **kwargs):
        raise AssertionError("a connection was opened to a refused address")

    monkeypatch.setattr(backend.inner, "connect_tcp", connect_tcp)

    with pytest.raises(fetch.Refused, match="169.254.169.254"):
        backend.connect_tcp("metadata.example", 80)
    with pytest.raises(fetch.Refused):
        backend.connect_unix_socket("/var/run/docker.sock")


def test_it_tries_the_next_checked_address_when_one_does_not_answer(monkeypatch):
    answer_getaddrinfo(monkeypatch, "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "93.184.215.14")
    backend = fetch.GuardedBackend()
    tried = []

    def connect_tcp(host, port, timeout=None, local_address=None, socket_options=None):
        tried.append(host)
        if ":" in host:
            raise httpcore.ConnectError("network unreachable")
        return "a stream"

    monkeypatch.setattr(backend.inner, "connect_tcp", connect_tcp)

    assert backend.connect_tcp("feeds.example", 443).inner == "a stream"
    assert tried == ["2606:2800:21f:cb07:6820:80da:af6b:8b2c", "93.184.215.14"]


# ── 410 and 429 ──────────────────────────────────────────────────────────────


def test_it_disables_a_gone_feed_and_never_asks_for_it_again(svc, feed_server):
    gone = add(svc, feed_server.serve("/gone.xml", b"Gone", status=410, **{"Content-Type": "text/plain"}))
    healthy = add(svc, feed_server.serve("/feed.xml", one_story(1)))

    first = feeds.poll_many(svc.Session, svc.settings, [gone, healthy])
    second = feeds.poll_many(svc.Session, svc.settings, [gone, healthy])

    assert [r.status for r in first] == ["gone", "ok"]
    assert "410" in first[0].error
    assert [r.status for r in second] == ["gone", "ok"]
    assert [path for path, _ in feed_server.requests].count("/gone.xml") == 1
    assert feed_row(svc, gone).status == "disabled"
    with transaction(svc.Session) as session:
        assert gone not in feeds.claim_due(session, svc.settings, T0 + timedelta(days=365))


@pytest.mark.parametrize("status, retry_after, not_before", [
    (429, "3600", T0 + timedelta(hours=1)),
    (429, "Sun, 06 Jan 2030 09:30:00 GMT", datetime(2030, 1, 6, 9, 30, tzinfo=UTC)),
    (503, "7200", T0 + timedelta(hours=2)),
])
def test_it_does_not_fetch_again_before_retry_after(svc, feed_server, status, retry_after, not_before):
    feed_id = add(svc, feed_server.serve("/feed.xml", b"slow down", status=status, **{"Retry-After": retry_after}))

    result = poll(svc, feed_id)

    assert result.status == "error"
    assert str(status) in result.error
    feed = feed_row(svc, feed_id)
    assert feed.next_fetch_at == not_before
    assert feed.status == "active"
    with transaction(svc.Session) as session:
        assert feeds.claim_due(session, svc.settings, not_before - timedelta(seconds=1)) == []
        assert feeds.claim_due(session, svc.settings, not_before) == [feed_id]


def test_it_backs_off_as_usual_when_retry_after_is_in_the_past(svc, feed_server):
    feed_id = add(svc, feed_server.serve("/feed.xml", b"slow down", status=429,
                                         **{"Retry-After": "Mon, 01 Jan 2029 00:00:00 GMT"}))

    poll(svc, feed_id)

    assert feed_row(svc, feed_id).next_fetch_at == T0 + timedelta(seconds=svc.settings.poll_interval)


@pytest.mark.parametrize("status, retry_after", [
    (429, "1000000000000"),
    (503, "Fri, 31 Dec 9999 23:59:59 -2359"),
    (429, "\u00b2"),
    (200, "1000000000000"),
])
def test_it_survives_a_retry_after_it_cannot_use(svc, feed_server, status, retry_after):
    hostile = add(svc, feed_server.serve("/feed.xml", one_story(1), status=status, **{"Retry-After": retry_after}))
    healthy = add(svc, feed_server.serve("/other.xml", one_story(2)))

    results = feeds.poll_many(svc.Session, svc.settings, [hostile, healthy])

    assert [r.status for r in results] == ["ok" if status == 200 else "error", "ok"]
    assert feed_row(svc, hostile).last_fetched_at is not None
