"""`syndicate feed add` fetches the feed once and says what it found, or refuses saying why; --no-check
adds it unfetched."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from syndicate.cli.main import main


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
            "SYNDICATE_ALLOW_PRIVATE_FEEDS": "1", "SYNDICATE_FEED_TIMEOUT": "2"}


@pytest.fixture
def syndicate(env):
    runner = CliRunner()

    def run(*args: str, **more: str):
        return runner.invoke(main, list(args), env={**env, **more})

    assert run("db", "upgrade").exit_code == 0
    return run


def feeds_listed(syndicate) -> str:
    return syndicate("feed", "list").output


def test_it_says_the_title_and_the_items_it_found(syndicate, feed_server, sample_feed):
    url = feed_server.serve("/feed/", sample_feed)

    result = syndicate("feed", "add", url)

    assert result.exit_code == 0, result.output
    assert "feed 1: added 'TruthUSA News Hub' — 4 items; first poll at the next tick" in result.output
    assert "was added already" in syndicate("feed", "add", url).output
    assert len(feed_server.requests) == 2  # one fetch each time, nothing else


def test_an_address_that_answers_404_is_refused_and_not_added(syndicate, feed_server):
    result = syndicate("feed", "add", feed_server.base + "/nothing-here/")

    assert result.exit_code != 0
    said = str(result.exception)
    assert "answers HTTP 404 (not found)" in said and "--no-check" in said
    assert "(none)" in feeds_listed(syndicate)


def test_a_web_page_is_refused_as_not_a_feed(syndicate, feed_server):
    url = feed_server.serve("/", b"<!doctype html><html><head><title>Home</title></head><body>Hi</body></html>",
                            **{"Content-Type": "text/html; charset=utf-8"})

    result = syndicate("feed", "add", url)

    said = str(result.exception)
    assert "not a feed" in said and "address of its RSS or Atom feed" in said and "--no-check" in said
    assert "(none)" in feeds_listed(syndicate)


def test_a_private_address_is_refused_saying_how_to_allow_it(syndicate, feed_server, sample_feed):
    url = feed_server.serve("/feed/", sample_feed)

    result = syndicate("feed", "add", url, SYNDICATE_ALLOW_PRIVATE_FEEDS="0")

    said = str(result.exception)
    assert "SYNDICATE_ALLOW_PRIVATE_FEEDS=1" in said and "--no-check" in said
    assert feed_server.requests == []


def test_a_server_that_never_answers_is_refused_within_the_deadline(syndicate, feed_server):
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection, never answers
    try:
        result = syndicate("feed", "add", f"http://127.0.0.1:{silent.getsockname()[1]}/feed")
    finally:
        silent.close()

    assert "no complete answer within the deadline" in str(result.exception)


def test_no_check_adds_a_feed_that_is_not_up_yet(syndicate, feed_server):
    result = syndicate("feed", "add", feed_server.base + "/soon/", "--no-check")

    assert result.exit_code == 0, result.output
    assert "added unchecked" in result.output
    assert feed_server.requests == []
    assert "/soon/" in feeds_listed(syndicate)
