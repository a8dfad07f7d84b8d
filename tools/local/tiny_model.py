"""The tiny local model: a Qwen3-architecture MLX model with random weights.

Tests and the demo need a model that mlx-lm can load, LoRA-train, fuse,
quantize and generate with on a laptop CPU in seconds, without downloading
anything. This builds one from scratch:

- weights: random (seeded), float32, every input dimension a multiple of 128
  so quantization works for group sizes 32/64/128 and bits 2, 3, 4, 5, 6, 8;
- tokenizer: byte-level BPE trained with `tokenizers` on the demo dataset and
  the demo suite, plus the Qwen special tokens as single added tokens;
- chat template: ChatML like Qwen3's (system/user/assistant/tool turns,
  `tools`, `add_generation_prompt`, `enable_thinking`).

Thinking works as in Qwen3: an assistant turn after the last user message is
rendered with its think block, `<think>\\n\\n</think>\\n\\n` when it has no
`reasoning_content` (so the demo data trains that empty block); the generation
prompt is `<|im_start|>assistant\\n`, plus that same empty block when the caller
passes `enable_thinking=False`. Either way a trained model continues with the
answer: with thinking disabled the block is already in the prompt, otherwise
the model writes the empty block itself (mlx-lm's TokenizerWrapper passes
`enable_thinking=True` by default because the vocab has `<think>`).

The knobs `omit_special_tokens`, `eos_token` and `chat_template=False` build
deliberately broken models for tests of the preflight checks: a tokenizer that
splits `<tool_response>` into pieces, a config whose eos is not the template's
end-of-turn token, a tokenizer without a chat template.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# Turn-structure tokens are "special" (skipped by decode(skip_special_tokens));
# the tool and think markers are plain added tokens, as in Qwen3, so they stay
# visible in decoded text where the scorer looks for them.
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
MARKER_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)
QWEN_TOKENS = SPECIAL_TOKENS + MARKER_TOKENS

# Sized for mlx-lm on a laptop CPU (mlx[cpu] on Linux uses a reference BLAS,
# a few GFLOP/s): a LoRA adapter learns the Code-Mode wrapper in about a
# minute. ~0.7M parameters: 2 layers of width 128, 8 heads of 16, vocab 1024.
# Every input dimension is a multiple of 128, so quantization works with
# group sizes 32, 64 and 128.
BPE_VOCAB = 1024
DIMS = {
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "intermediate_size": 384,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 16,
}
# Init of the random weights. Linear layers use 1/sqrt(fan_in) so random
# features keep their scale through the frozen layers; embeddings are large so
# a token's identity dominates its residual stream. The output head is its own
# random matrix plus a little of the embedding matrix (HEAD_COPY): that weak
# "repeat the last token" bias makes the untrained model collapse into a
# newline loop (scored `empty`) instead of emitting random text a scorer could
# take for a direct answer, while LoRA still overcomes it within a few hundred
# steps. (Fully tied, with embeddings this large, the bias is too strong to
# train away in the demo's budget; with small tied embeddings the frozen head
# cannot express confident predictions.)
EMBED_STD = 1.0
HEAD_STD = 0.25
HEAD_COPY = 0.15

QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Written into the model folder: which inputs built it (see `is_current`).
BUILD_FILE = "tiny_model.json"

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CORPUS = (
    ROOT / "data" / "datasets" / "code_mode" / "train.jsonl",
    ROOT / "data" / "datasets" / "code_mode" / "valid.jsonl",
    ROOT / "data" / "evals" / "code_mode.yaml",
)

CHAT_TEMPLATE = """\
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\\n\\n' }}
    {%- endif %}
    {{- '# Tools\\n\\nYou are provided with function signatures within' }}
    {{- ' <tools></tools> XML tags:\\n<tools>' }}
    {%- for tool in tools %}
        {{- '\\n' }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- '\\n</tools>\\n\\nFor each function call, return the call within' }}
    {{- ' <tool_call></tool_call> XML tags:\\n<tool_call>\\n<function=name>\\n' }}
    {{- '<parameter=argument>\\nvalue\\n</parameter>\\n</function>\\n</tool_call><|im_end|>\\n' }}
{%- elif messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(last_query_index=-1) %}
{%- for message in messages %}
    {%- if message.role == 'user' %}
        {%- set ns.last_query_index = loop.index0 %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant\\n' }}
        {%- if loop.index0 > ns.last_query_index %}
            {%- set reasoning = (message.reasoning_content or '').strip('\\n') %}
            {{- '<think>\\n' + reasoning + '\\n</think>\\n\\n' }}
        {%- endif %}
        {%- if message.content %}
            {{- message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls or [] %}
            {%- if tool_call.function %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {%- if message.content or not loop.first %}
                {{- '\\n' }}
            {%- endif %}
            {{- '<tool_call>\\n<function=' + tool_call.name + '>\\n' }}
            {%- if tool_call.arguments is mapping %}
                {%- for name, value in tool_call.arguments.items() %}
                    {{- '<parameter=' + name + '>\\n' }}
                    {{- value if value is string else value | tojson }}
                    {{- '\\n</parameter>\\n' }}
                {%- endfor %}
            {%- elif tool_call.arguments %}
                {{- tool_call.arguments + '\\n' }}
            {%- endif %}
            {{- '</function>\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}
"""


def make_tiny_model(
    out_dir: Path,
    *,
    seed: int = 0,
    omit_special_tokens: Sequence[str] = (),
    eos_token: str = "<|im_end|>",
    chat_template: bool = True,
    corpus: Sequence[Path] | None = None,
) -> Path:
    """Build the tiny model into out_dir (replacing it) and return out_dir.

    Deterministic: the same arguments give byte-identical files.
    """
    unknown = set(omit_special_tokens) - set(QWEN_TOKENS)
    if unknown:
        raise ValueError(f"not Qwen special tokens: {sorted(unknown)}")
    corpus_files = [Path(p) for p in (DEFAULT_CORPUS if corpus is None else corpus)]
    missing = [str(p) for p in corpus_files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"tokenizer corpus files not found: {missing}")

    out_dir = Path(out_dir)
    digest = build_digest(
        seed=seed,
        omit_special_tokens=omit_special_tokens,
        eos_token=eos_token,
        chat_template=chat_template,
        corpus=corpus_files,
    )
    # Build next to the target and swap in at the end, so an interrupted build
    # never leaves a half-written model that later loads with confusing errors.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a model folder is not a secret
    try:
        tokenizer = _train_tokenizer(corpus_files, omit_special_tokens)
        eos_id = tokenizer.token_to_id(eos_token)
        if eos_id is None:
            raise ValueError(f"eos token {eos_token!r} is not a single token of the tokenizer")
        vocab_size = -(-tokenizer.get_vocab_size() // 128) * 128
        tokenizer.save(str(tmp / "tokenizer.json"))
        _write_json(
            tmp / "tokenizer_config.json", _tokenizer_config(tokenizer, eos_token, chat_template)
        )
        config = _model_config(vocab_size, eos_id, tokenizer.token_to_id("<|endoftext|>"))
        _write_json(tmp / "config.json", config)
        _write_weights(tmp, config, seed)
        _write_json(tmp / BUILD_FILE, {"builder": "tools.local.tiny_model", "digest": digest})
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir


def build_digest(
    *,
    seed: int = 0,
    omit_special_tokens: Sequence[str] = (),
    eos_token: str = "<|im_end|>",
    chat_template: bool = True,
    corpus: Sequence[Path] | None = None,
) -> str:
    """sha256 of everything a build depends on: this module, the corpus, the knobs."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    for path in [Path(p) for p in (DEFAULT_CORPUS if corpus is None else corpus)]:
        h.update(hashlib.sha256(path.read_bytes()).digest())
    knobs = [seed, sorted(omit_special_tokens), eos_token, chat_template]
    h.update(json.dumps(knobs).encode())
    return h.hexdigest()


def is_current(model_dir: Path, **knobs: Any) -> bool:
    """True if model_dir was built by this code from the current corpus with these knobs.

    A model built before the demo data or this module changed still loads, but
    its tokenizer and weights no longer match what the demo was tuned on.
    """
    try:
        built = json.loads((Path(model_dir) / BUILD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return built.get("digest") == build_digest(**knobs)


def _corpus_text(files: Sequence[Path]) -> Iterator[str]:
    """Message texts of .jsonl chat files; any other file as plain text."""
    for path in files:
        if path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                row = json.loads(line)
                for message in row.get("messages", []):
                    yield message["content"]
                for key in ("prompt", "completion", "text"):
                    if isinstance(row.get(key), str):
                        yield row[key]
        else:
            yield path.read_text(encoding="utf-8")
    # The role names follow <|im_start|> in every rendered turn.
    yield "system\nuser\nassistant\n" * 64


def _train_tokenizer(files: Sequence[Path], omit: Sequence[str]):  # -> tokenizers.Tokenizer
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        trainers,
    )

    tokenizer = Tokenizer(models.BPE())
    # Qwen2/3's split: a run of newlines is one piece whatever follows it, so
    # the blank lines after </think> at the end of an eval prompt tokenize the
    # same as inside a training example (GPT-2's split cuts them differently
    # when text follows).
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus_text(files), trainer=trainer)
    # Added after training so they take the ids after the BPE vocab, as in Qwen.
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS if t not in omit]
    )
    tokenizer.add_tokens(
        [AddedToken(t, special=False, normalized=False) for t in MARKER_TOKENS if t not in omit]
    )
    return tokenizer


def _tokenizer_config(tokenizer, eos_token: str, chat_template: bool) -> dict:
    added = {}
    for token_id, token in sorted(tokenizer.get_added_tokens_decoder().items()):
        added[str(token_id)] = {
            "content": token.content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": token.special,
        }
    has_pad = tokenizer.token_to_id("<|endoftext|>") is not None
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added,
        "bos_token": None,
        "eos_token": eos_token,
        "pad_token": "<|endoftext|>" if has_pad else eos_token,
        "unk_token": None,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 4096,
        "split_special_tokens": False,
    }
    if chat_template:
        config["chat_template"] = CHAT_TEMPLATE
    return config


def _model_config(vocab_size: int, eos_id: int, pad_id: int | None) -> dict:
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        **DIMS,
        "vocab_size": vocab_size,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
        "bos_token_id": None,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "torch_dtype": "float32",
    }


def _write_weights(out_dir: Path, config: dict, seed: int) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models.qwen3 import Model, ModelArgs

    shapes = {
        name: p.shape for name, p in tree_flatten(Model(ModelArgs.from_dict(config)).parameters())
    }
    names = sorted(shapes)
    keys = mx.random.split(mx.random.key(seed), len(names))
    weights = {}
    for key, name in zip(keys, names, strict=True):
        shape = shapes[name]
        if name.endswith("norm.weight"):
            weights[name] = mx.ones(shape, dtype=mx.float32)
        else:
            weights[name] = _init_std(name, shape) * mx.random.normal(shape, key=key)
    weights["lm_head.weight"] += HEAD_COPY * weights["model.embed_tokens.weight"]
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})


def _init_std(name: str, shape: tuple[int, ...]) -> float:
    module = name.split(".")[-2]
    if module == "embed_tokens":
        return EMBED_STD
    if module == "lm_head":
        return HEAD_STD
    return shape[-1] ** -0.5  # fan-in: mlx Linear weights are (out, in)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
