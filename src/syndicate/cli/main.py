"""The `syndicate` command: one group of commands per area, each in its module here."""

from __future__ import annotations

import sys

import click

from syndicate import __version__
from syndicate.cli import editors, feeds, inbound, jobs, newsletters, social, subscribers
from syndicate.errors import SyndicateError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="syndicate")
def main() -> None:
    """Newsletter digests and social teasers from your site's feeds.

    Settings come from SYNDICATE_* environment variables; with none set,
    everything runs on this machine (SQLite, an embedded broker, the outbox folder).
    """


for command in (jobs.demo, jobs.run, jobs.web, jobs.db_group, feeds.feed, feeds.article, newsletters.newsletter,
                newsletters.edition, jobs.deliver, jobs.pace, subscribers.subscriber, social.account, social.post,
                social.social, inbound.inbound, editors.user, editors.token):
    main.add_command(command)


def cli() -> None:
    """The console script: errors of ours become one line that says what to do."""
    try:
        code = main(standalone_mode=False)
        if isinstance(code, int):
            sys.exit(code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except SyndicateError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


