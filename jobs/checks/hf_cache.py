"""Base models already in the Hugging Face cache: found without downloading."""

from __future__ import annotations

from pathlib import Path

# Files mlx-lm's load_tokenizer reads (no weights): enough for the model checks.
TOKENIZER_PATTERNS = (
    "*.json",
    "tokenizer.model",
    "*.tiktoken",
    "tiktoken.model",
    "*.txt",
    "*.jinja",
)


def cached_model_dir(hf_id: str) -> Path | None:
    """The Hugging Face cache folder of `hf_id` when its tokenizer files are already on
    this machine; None otherwise. Never downloads."""
    try:
        from huggingface_hub import snapshot_download

        path = Path(
            snapshot_download(hf_id, allow_patterns=list(TOKENIZER_PATTERNS), local_files_only=True)
        )
    except Exception:  # noqa: BLE001 - not cached (or no hub library): the worker checks
        return None
    has_tokenizer = any((path / n).is_file() for n in ("tokenizer.json", "tokenizer.model"))
    return path if has_tokenizer and (path / "config.json").is_file() else None
