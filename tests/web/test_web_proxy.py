"""`syndicate web` behind a reverse proxy: X-Forwarded-For names the visitor only when it comes from a proxy the
operator listed (SYNDICATE_TRUSTED_PROXIES / --forwarded-allow-ips), so each visitor has their own sign-up
limit and nobody can dodge it by sending the header themselves. The real command, as a process, over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from click.testing import CliRunner

from conftest import answers, free_port, hidden_fields, terminate, wait_for
from syndicate.cli.main import main
from syndicate.config import Settings
from syndicate.errors import SettingsError

HELD_BACK = "holding this one back"
SENT = "sent you an email"


@pytest.fixture
def serve_web(tmp_path):
    """Start `syndicate web` (as an operator would, from the environment) with extra SYNDICATE_* settings
    and command-line options; its base URL. One client address (127.0.0.1: the proxy) may get 1
    confirmation mail an hour."""
    started = []

    def start(*options: str, **settings: str) -> str:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYNDICATE_")}
        env.update(SYNDICATE_DATA_DIR=str(tmp_path / f"data-{port}"), SYNDICATE_SECRET_KEY="proxy-test",
                   SYNDICATE_BASE_URL=f"http://127.0.0.1:{port}", SYNDICATE_CONFIRMATIONS_PER_CLIENT="1",
                   **{f"SYNDICATE_{k.upper()}": v for k, v in settings.items()})
        runner = CliRunner()
        for args in (["db", "upgrade"], ["newsletter", "add", "daily", "--name", "Daily",
                                         "--from-address", "news@example.com"]):
            result = runner.invoke(main, args, env=env)
            assert result.exit_code == 0, result.output
        log = open(tmp_path / f"web-{port}.log", "w")
        process = subprocess.Popen([sys.executable, "-m", "syndicate", "web", "--port", str(port), *options],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        started.append((process, log))
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(base + "/") or process.poll() is not None, 60, "syndicate web")
        assert process.poll() is None, (tmp_path / f"web-{port}.log").read_text()
        return base

    yield start
    for process, log in started:
        terminate(process, 30)
        log.close()


def sign_up(base: str, address: str, forwarded_for: str) -> str:
    """A visitor's sign-up as the reverse proxy on 127.0.0.1 passes it on."""
    form = hidden_fields(httpx.get(base + "/").text)
    page = httpx.post(base + "/subscribe", data={**form, "email": address, "newsletter": "daily"},
                      headers={"X-Forwarded-For": forwarded_for})
    assert page.status_code == 200, page.text
    return page.text


@pytest.mark.parametrize("how", ["setting", "option"])
def test_behind_a_trusted_proxy_each_visitor_has_their_own_signup_limit(serve_web, how):
    base = serve_web(trusted_proxies="127.0.0.1") if how == "setting" else \
        serve_web("--forwarded-allow-ips", "127.0.0.0/8")

    assert SENT in sign_up(base, "ada@example.com", "198.51.100.1")
    assert SENT in sign_up(base, "grace@example.com", "198.51.100.2")  # another visitor, another limit
    assert HELD_BACK in sign_up(base, "ada2@example.com", "198.51.100.1")  # the first one's limit is used up
    # A visitor who sends their own X-Forwarded-For: the proxy appends the address it saw, and that one counts.
    assert HELD_BACK in sign_up(base, "ada3@example.com", "203.0.113.9, 198.51.100.1")


def test_without_a_trusted_proxy_x_forwarded_for_is_ignored(serve_web):
    base = serve_web()

    assert SENT in sign_up(base, "ada@example.com", "198.51.100.1")
    # A made-up X-Forwarded-For buys no fresh limit: the address that connected is what counts.
    assert HELD_BACK in sign_up(base, "grace@example.com", "198.51.100.2")


def test_a_trusted_proxy_that_is_not_an_address_is_refused_at_start(tmp_path):
    with pytest.raises(SettingsError, match="SYNDICATE_TRUSTED_PROXIES='10.0.0.1,proxy.internal'"):
        Settings.from_env({"SYNDICATE_DATA_DIR": str(tmp_path), "SYNDICATE_SECRET_KEY": "s",
                           "SYNDICATE_TRUSTED_PROXIES": "10.0.0.1,proxy.internal"})
    result = CliRunner().invoke(main, ["web", "--forwarded-allow-ips", "my-proxy"],
                                env={"SYNDICATE_DATA_DIR": str(tmp_path), "SYNDICATE_SECRET_KEY": "s"})
    assert result.exit_code != 0
    assert "'my-proxy' is not an IP address or network" in str(result.exception) + result.output
