"""The command line: click, and only here. `main` is the front door (`labhop.cli.main`)."""
