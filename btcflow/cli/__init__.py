"""The `btcflow` command line: one module per command group, assembled in btcflow.cli.main."""
