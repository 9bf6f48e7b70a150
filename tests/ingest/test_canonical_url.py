"""canonical_url: what makes two links one story. Properties over generated URLs, then the edge cases."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from syndicate.ingest.documents import TRACKING_PARAMS, canonical_url

PROPERTY = settings(max_examples=300, deadline=None)

# ── URLs as feeds write them ─────────────────────────────────────────────────

LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=12)
schemes = st.sampled_from(["http", "https", "HTTP", "HTTPS", "Https", "hTtP"])
hosts = st.builds(lambda labels, tld: ".".join(labels + [tld]),
                  st.lists(LABEL, min_size=1, max_size=3), st.sampled_from(["example", "EXAMPLE", "Example", "org"]))
ports = st.one_of(st.just(""), st.integers(min_value=1, max_value=65535).map(lambda p: f":{p}"))
SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~", max_size=10)
paths = st.lists(SEGMENT, max_size=4).map(lambda segments: "/" + "/".join(segments))
# Parameter names and values as text: anything at all, percent-encoded on the way into the URL.
KEY = st.text(min_size=1, max_size=10).filter(lambda k: not k.lower().startswith(TRACKING_PARAMS))
VALUE = st.text(max_size=12)
params = st.lists(st.tuples(KEY, VALUE), max_size=5)
TRACKING_KEYS = st.sampled_from([
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "UTM_Source", "Utm_Medium",
    "utm_id", "fbclid", "FBCLID", "gclid", "mc_cid", "mc_eid",
])
tracking = st.lists(st.tuples(TRACKING_KEYS, VALUE), max_size=4)
fragments = st.one_of(st.none(), st.text(max_size=12))


def url_from(scheme: str, host: str, port: str, path: str, query: list[tuple[str, str]],
             fragment: str | None) -> str:
    url = f"{scheme}://{host}{port}{path}"
    if query:
        url += "?" + urlencode(query, quote_via=quote)
    if fragment is not None:
        url += "#" + quote(fragment)
    return url


@st.composite
def links(draw):
    """(url, the parameters a reader cares about, in order): a link with tracking mixed in anywhere."""
    kept = draw(params)
    query = list(kept)
    for pair in draw(tracking):
        query.insert(draw(st.integers(min_value=0, max_value=len(query))), pair)
    url = url_from(draw(schemes), draw(hosts), draw(ports), draw(paths), query, draw(fragments))
    return url, kept


def query_of(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


# ── properties ───────────────────────────────────────────────────────────────


@PROPERTY
@given(links())
def test_it_is_idempotent(link):
    url, _ = link
    once = canonical_url(url)

    assert canonical_url(once) == once


@PROPERTY
@given(st.text(max_size=60))
def test_it_is_idempotent_on_any_text_it_accepts(text):
    try:
        once = canonical_url(text)
    except ValueError:  # urlsplit refuses some text (e.g. "http://["); feedparser never hands us those
        assume(False)
    assert canonical_url(once) == once


@PROPERTY
@given(links())
def test_it_never_keeps_tracking_parameters_or_a_fragment(link):
    url, _ = link

    canonical = canonical_url(url)

    assert "#" not in canonical
    assert not urlsplit(canonical).fragment
    assert not [k for k, _ in query_of(canonical) if k.lower().startswith(("utm_", "fbclid", "gclid"))]


@PROPERTY
@given(links())
def test_it_lower_cases_scheme_and_host_and_keeps_the_path(link):
    url, _ = link

    canonical = urlsplit(canonical_url(url))
    given_parts = urlsplit(url)

    assert canonical.scheme == given_parts.scheme.lower()
    assert canonical.netloc == given_parts.netloc.lower()
    assert canonical.hostname == canonical.hostname.lower()
    assert canonical.path == given_parts.path


@PROPERTY
@given(links())
def test_it_keeps_every_other_query_parameter_in_order(link):
    url, kept = link

    assert query_of(canonical_url(url)) == kept


@PROPERTY
@given(st.data())
def test_it_makes_links_equal_that_differ_only_by_tracking_fragment_or_host_case(data):
    scheme, host, port, path = data.draw(schemes), data.draw(hosts), data.draw(ports), data.draw(paths)
    kept = data.draw(params)

    def variant() -> str:
        query = list(kept)
        for pair in data.draw(tracking):
            query.insert(data.draw(st.integers(min_value=0, max_value=len(query))), pair)
        recased = "".join(c.upper() if data.draw(st.booleans()) else c.lower() for c in host)
        rescheme = data.draw(st.sampled_from([scheme.lower(), scheme.upper()]))
        return url_from(rescheme, recased, port, path, query, data.draw(fragments))

    assert canonical_url(variant()) == canonical_url(variant())


@PROPERTY
@given(st.tuples(schemes, hosts, paths), KEY, VALUE, VALUE)
def test_it_keeps_links_apart_that_differ_in_a_real_parameter(base, key, one, other):
    assume(one != other)
    scheme, host, path = base

    first = canonical_url(url_from(scheme, host, "", path, [(key, one)], None))
    second = canonical_url(url_from(scheme, host, "", path, [(key, other)], None))

    assert first != second


# ── examples ─────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("given_url, expected", [
    ("https://news.example/a?utm_source=x&id=1&utm_medium=rss#top", "https://news.example/a?id=1"),
    ("https://news.example/a?fbclid=IwAR0&gclid=Cj0&mc_cid=1&mc_eid=2", "https://news.example/a"),
    ("HTTPS://NEWS.EXAMPLE:8443/Case/Kept?Q=Kept", "https://news.example:8443/Case/Kept?Q=Kept"),
    ("https://news.example/a?b=2&a=1&c=3", "https://news.example/a?b=2&a=1&c=3"),
    ("https://news.example/search?q=caf%C3%A9+au+lait", "https://news.example/search?q=caf%C3%A9+au+lait"),
    ("https://news.example/?", "https://news.example/"),
    ("https://news.example#", "https://news.example/"),
])
def test_it_canonicalises_these_links(given_url, expected):
    assert canonical_url(given_url) == expected


def test_it_keeps_links_apart_that_differ_in_a_latin_1_encoded_parameter():
    assert canonical_url("http://old.example/search?s=caf%E9") != canonical_url("http://old.example/search?s=caf%E8")
