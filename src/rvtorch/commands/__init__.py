"""One module per ``rvtorch`` sub-command; see ``rvtorch.cli.COMMANDS``."""
