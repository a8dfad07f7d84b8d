"""Shipping a run's result: `farm export` (a folder mlx-lm loads, checked against
the digests the farm recorded, with a model card written from the database) and
`farm publish` (that folder on the Hugging Face Hub, recorded once it is there)."""
