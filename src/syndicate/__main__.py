from syndicate.cli import cli

cli()
