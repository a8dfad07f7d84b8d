"""The top floor: what a person runs. `tools.cli` is the `farm` command,
`tools.local` starts a farm on one machine (`farm up`, the demo, the tiny
model) and `tools.bench` measures it (`farm bench`). Nothing below imports
from here."""
