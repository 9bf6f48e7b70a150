"""The render reads nothing from anywhere: a template's stylesheets — a <link>, an @import in any of its
spellings, on another server or next to the template — are never loaded while an edition is cut, so a
template can't make the cut wait on another server, or reach into our network. The editor is told what was
left out, on the edition's warnings."""

from __future__ import annotations

import socket
import threading

import pytest
from click.testing import CliRunner

from conftest import FeedServer
from syndicate import templating
from syndicate.cli.main import main

CSS = b"p.lead { color: #ff0000; }"
BODY_TXT = "{% for a in articles %}* {{ a.title }}\n{% endfor %}"


def template(imports: str) -> str:
    """A complete body.html whose own <style> is inlined, after `imports` asked for more."""
    return ("<!doctype html><html><head>" + imports +
            "<style>p.lead { font-weight: bold; }</style></head><body><table>{% for a in articles %}"
            '<tr><td><p class="lead">{{ a.title }}</p></td></tr>{% endfor %}</table></body></html>')


@pytest.fixture
def newsroom(tmp_path, feed_server, sample_feed):
    """A newsletter with stories to cut, whose template comes from SYNDICATE_TEMPLATE_DIR; `run` is the CLI."""
    folder = tmp_path / "templates" / "email" / "edition"
    folder.mkdir(parents=True)
    (folder / "body.txt").write_text(BODY_TXT, encoding="utf-8")
    env = {"SYNDICATE_DATA_DIR": str(tmp_path / "data"), "SYNDICATE_SECRET_KEY": "s",
           "SYNDICATE_ALLOW_PRIVATE_FEEDS": "1", "SYNDICATE_BASE_URL": "https://news.example",
           "SYNDICATE_TEMPLATE_DIR": str(tmp_path / "templates")}
    runner = CliRunner()

    def run(*args: str):
        result = runner.invoke(main, list(args), env=env)
        assert result.exit_code == 0, (result.output, result.exception)
        return result.output

    run("db", "upgrade")
    run("feed", "add", feed_server.serve("/feed/", sample_feed))
    run("feed", "poll", "--all")
    run("newsletter", "add", "morning", "--name", "Morning", "--from-address", "news@example.com",
        "--first-fill", "last:10", "--max-age", "0")  # the sample's stories are from 2023
    run.body = folder / "body.html"
    yield run
    templating.use_template_dir(None)  # the CLI set it process-wide: never leak it into other tests


@pytest.fixture
def css_server():
    server = FeedServer()
    yield server
    server.close()


def test_cutting_an_edition_loads_none_of_the_stylesheets_its_template_names(newsroom, css_server, tmp_path):
    link = css_server.serve("/link.css", CSS, **{"Content-Type": "text/css"})
    url_import = css_server.serve("/url.css", CSS, **{"Content-Type": "text/css"})
    quoted_import = css_server.serve("/quoted.css", CSS, **{"Content-Type": "text/css"})
    # Next to the template, and where a relative @import resolves (the working directory): not read either.
    (newsroom.body.parent / "beside.css").write_bytes(CSS)
    newsroom.body.write_text(template(
        f'<link rel="stylesheet" href="{link}">'
        f'<style>@import url({url_import}); @import "{quoted_import}"; @import "beside.css"; '
        f"@import url('file://{newsroom.body.parent / 'beside.css'}');</style>"), encoding="utf-8")

    cut = newsroom("edition", "cut", "morning", "--draft")

    assert css_server.requests == []
    assert "morning/1 (id 1): draft" in cut
    html = (tmp_path / "p" / "morning-1.html")
    newsroom("edition", "preview", "morning/1", "--out", str(tmp_path / "p"))
    inlined = html.read_text(encoding="utf-8")
    assert "font-weight:bold" in inlined.replace(" ", "")  # the template's own <style> still applies
    assert "#ff0000" not in inlined and "#f00" not in inlined  # nothing from the stylesheets it named
    for url in (url_import, quoted_import, link):
        assert f"warning: the template's stylesheet {url} was not loaded" in cut
    assert "beside.css was not loaded" in cut


class SilentServer:
    """Takes connections and never says a word. It hangs up after a while, so that a build that does
    fetch fails this test on the count instead of hanging the test run."""

    def __init__(self, hang_up_after: float = 10.0):
        self.accepted = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.hang_up_after = hang_up_after
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            threading.Timer(self.hang_up_after, connection.close).start()

    def close(self):
        self.listener.close()


def test_a_stylesheet_server_that_never_answers_doesnt_hold_up_the_cut(newsroom):
    silent = SilentServer()
    try:
        newsroom.body.write_text(template(f'<style>@import url("{silent.url}/never.css");</style>'),
                                 encoding="utf-8")
        cut = newsroom("edition", "cut", "morning", "--draft")
    finally:
        silent.close()

    assert silent.accepted == 0
    assert "morning/1 (id 1): draft" in cut
    assert f"{silent.url}/never.css was not loaded" in cut
