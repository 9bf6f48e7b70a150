from syndicate.cli.main import cli

cli()
