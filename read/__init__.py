"""The read side: the queries and view models that the web pages and the CLI
share (leaderboard pages, runs and their stages, verdicts, sweeps, workers).
It reads the core's tables and writes nothing; `web/` and `tools/` draw what it
returns."""
