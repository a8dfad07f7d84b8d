"""`python -m jobs.cli`: the `farm` command (workers are started this way)."""

from jobs.cli import app

app()
