"""The tiny local model: tokenizer, chat template, and the whole mlx-lm round trip."""

from __future__ import annotations

import json
import os
import types
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may touch the network

from tools.local.tiny_model import QWEN_TOKENS, is_current, make_tiny_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "You are a coding assistant."
CALL = (
    "<tool_call>\n<function=execute_code>\n<parameter=code>\n"
    'result = typecheck("src/app.py")\nprint(result.error_count)\n'
    "</parameter>\n</function>\n</tool_call>"
)
CHAT = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Check src/app.py for type errors."},
    {"role": "assistant", "content": CALL},
]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-qwen3", seed=0)


@pytest.fixture(scope="session")
def loaded(tiny_dir: Path):
    from mlx_lm import load

    return load(str(tiny_dir))


def files_of(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_model_files_and_config(tiny_dir: Path) -> None:
    names = set(files_of(tiny_dir))
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"} <= names
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "qwen3"
    tokenizer = json.loads((tiny_dir / "tokenizer.json").read_text())
    im_end = next(t["id"] for t in tokenizer["added_tokens"] if t["content"] == "<|im_end|>")
    assert config["eos_token_id"] == im_end
    # quantization with group size up to 128 needs every input dimension divisible by it
    for key in ("hidden_size", "intermediate_size"):
        assert config[key] % 128 == 0
    assert (config["num_attention_heads"] * config["head_dim"]) % 128 == 0


def test_special_tokens_are_single_tokens(loaded) -> None:
    _, tokenizer = loaded
    for token in QWEN_TOKENS:
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1, (token, ids)
        assert tokenizer.decode(ids) == token
    ids = tokenizer.encode(CALL, add_special_tokens=False)
    assert tokenizer.decode(ids) == CALL


def test_chat_template_renders(loaded) -> None:
    _, tokenizer = loaded
    text = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert text == (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nCheck src/app.py for type errors.<|im_end|>\n"
        f"<|im_start|>assistant\n<think>\n\n</think>\n\n{CALL}<|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(CHAT[:2], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>user\nCheck src/app.py for type errors.<|im_end|>\n"
                           "<|im_start|>assistant\n")  # fmt: skip
    no_think = tokenizer.apply_chat_template(
        CHAT[:2], add_generation_prompt=True, tokenize=False, enable_thinking=False
    )
    assert no_think == prompt + "<think>\n\n</think>\n\n"
    # Training masks the prompt by its token length: both renderings must be
    # token prefixes of the full conversation.
    full = tokenizer.apply_chat_template(CHAT)
    for kwargs in ({}, {"enable_thinking": False}):
        head = tokenizer.apply_chat_template(CHAT[:2], add_generation_prompt=True, **kwargs)
        assert full[: len(head)] == head


def test_chat_template_tools_and_tool_turns(loaded) -> None:
    _, tokenizer = loaded
    tool = {
        "type": "function",
        "function": {"name": "execute_code", "parameters": {"type": "object"}},
    }
    messages = [
        {"role": "user", "content": "Lint src/."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "execute_code", "arguments": {"code": "print(1)"}}}
            ],
        },
        {"role": "tool", "content": "1"},
    ]
    text = tokenizer.apply_chat_template(messages, tools=[tool], tokenize=False)
    assert "<tools>\n" in text and '"execute_code"' in text
    assert "<function=execute_code>\n<parameter=code>\nprint(1)\n</parameter>" in text
    assert "<|im_start|>user\n<tool_response>\n1\n</tool_response><|im_end|>" in text


def test_mlx_lm_trains_fuses_quantizes_and_generates(tiny_dir: Path, tmp_path: Path) -> None:
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_unflatten
    from mlx_lm import generate, load
    from mlx_lm.convert import convert
    from mlx_lm.generate import batch_generate
    from mlx_lm.lora import CONFIG_DEFAULTS, train_model
    from mlx_lm.tuner.datasets import load_dataset
    from mlx_lm.utils import dequantize_model, save

    data = tmp_path / "data"
    data.mkdir()
    for name in ("train", "valid"):
        (data / f"{name}.jsonl").write_text(json.dumps({"messages": CHAT}) + "\n")

    # train: a few LoRA iterations, as `mlx_lm lora --train` does them
    adapters = tmp_path / "adapters"
    args = types.SimpleNamespace(**{
        **CONFIG_DEFAULTS,
        "model": str(tiny_dir), "data": str(data), "train": True, "adapter_path": str(adapters),
        "iters": 3, "batch_size": 1, "num_layers": -1, "learning_rate": 1e-3,
        "mask_prompt": True, "val_batches": 1, "steps_per_eval": 3, "steps_per_report": 1,
        "save_every": 3, "max_seq_length": 256, "seed": 1,
    })  # fmt: skip
    model, tokenizer = load(str(tiny_dir))
    train_set, valid_set, _ = load_dataset(args, tokenizer)
    train_model(args, model, train_set, valid_set)
    assert (adapters / "adapters.safetensors").exists()
    assert (adapters / "adapter_config.json").exists()

    # fuse: load with the adapter, fold it in, dequantize, save
    model, tokenizer, config = load(str(tiny_dir), adapter_path=str(adapters), return_config=True)
    fused = [(n, m.fuse(dequantize=True)) for n, m in model.named_modules() if hasattr(m, "fuse")]
    assert fused
    model.update_modules(tree_unflatten(fused))
    model = dequantize_model(model)
    fused_dir = tmp_path / "fused"
    save(fused_dir, str(tiny_dir), model, tokenizer, config, donate_model=False)

    # quantize: one real conversion, then every bits/group size in memory
    q4 = tmp_path / "q4"
    convert(str(fused_dir), str(q4), quantize=True, q_bits=4, q_group_size=64)
    assert json.loads((q4 / "config.json").read_text())["quantization"]["bits"] == 4
    for bits in (2, 3, 4, 5, 6, 8):
        for group_size in (32, 64, 128):
            model, _ = load(str(fused_dir))
            nn.quantize(model, group_size=group_size, bits=bits)
            mx.eval(model(mx.array([[1, 2, 3]])))

    # generate, single and batched, with the chat template
    model, tokenizer = load(str(q4))
    prompt = tokenizer.apply_chat_template(CHAT[:2], add_generation_prompt=True, tokenize=False)
    text = generate(model, tokenizer, prompt, max_tokens=8)
    assert isinstance(text, str)
    model, tokenizer = load(str(fused_dir))
    ids = tokenizer.apply_chat_template(CHAT[:2], add_generation_prompt=True)
    response = batch_generate(model, tokenizer, [ids, ids[:-2]], max_tokens=8)
    assert len(response.texts) == 2


def test_broken_model_knobs(tmp_path: Path, tiny_dir: Path) -> None:
    from mlx_lm import load

    no_response = make_tiny_model(tmp_path / "no-response", omit_special_tokens=["<tool_response>"])
    _, tokenizer = load(str(no_response))
    assert len(tokenizer.encode("<tool_response>", add_special_tokens=False)) > 1
    assert len(tokenizer.encode("<tool_call>", add_special_tokens=False)) == 1

    eos = make_tiny_model(tmp_path / "eos", eos_token="<|endoftext|>")
    config = json.loads((eos / "config.json").read_text())
    _, tokenizer = load(str(eos))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert config["eos_token_id"] == tokenizer.convert_tokens_to_ids("<|endoftext|>") != im_end
    assert im_end not in tokenizer.eos_token_ids  # generation runs past the end of the turn
    assert "<|im_end|>" in tokenizer.apply_chat_template(CHAT, tokenize=False)

    bare = make_tiny_model(tmp_path / "bare", chat_template=False)
    _, tokenizer = load(str(bare))
    assert not tokenizer.has_chat_template
    assert tokenizer.chat_template is None

    with pytest.raises(ValueError, match="eos token"):
        make_tiny_model(tmp_path / "x", omit_special_tokens=["<|im_end|>"])


def test_same_seed_same_files(tmp_path: Path, tiny_dir: Path) -> None:
    again = make_tiny_model(tmp_path / "again", seed=0)
    assert files_of(again) == files_of(tiny_dir)
    other = files_of(make_tiny_model(tmp_path / "other", seed=1))
    assert other["model.safetensors"] != files_of(tiny_dir)["model.safetensors"]
    assert other["tokenizer.json"] == files_of(tiny_dir)["tokenizer.json"]


def test_rebuild_replaces_the_directory(tmp_path: Path) -> None:
    out = tmp_path / "model"
    make_tiny_model(out)
    (out / "stale.txt").write_text("left over")
    make_tiny_model(out)
    assert not (out / "stale.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model-")]


def test_build_record_tells_a_stale_model(tmp_path: Path, tiny_dir: Path) -> None:
    assert is_current(tiny_dir)
    assert not is_current(tiny_dir, seed=1)
    assert not is_current(tmp_path)  # nothing built there
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("def f(x):\n    return x\n" * 50)
    built = make_tiny_model(tmp_path / "m", corpus=[corpus])
    assert is_current(built, corpus=[corpus])
    corpus.write_text("class A:\n    pass\n" * 50)
    assert not is_current(built, corpus=[corpus])
