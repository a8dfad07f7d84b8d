"""`python -m tools.cli`: the `farm` command (workers are started this way)."""

from tools.cli import app

app()
