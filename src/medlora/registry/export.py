"""``medlora export``: the champion (or another adapter) as a standalone model, checked by loading it back.

    base + adapter -> next-token logits on ``export.check_prompts`` probe questions (the reference)
    -> fused (mlx-lm's LoRA ``fuse``) -> <out>/<name>/ as an mlx-lm model folder, with the model card
    -> read back with ``mlx_lm.load``: logits within FUSED_TOLERANCE of the reference
    -> <out>/<name>/<name>.<f16|f32>.gguf (llama models) -> read back through medlora's own GGUF
       reader (``medlora.models.load.convert``): logits compared with the fused model's weights
       rounded as the GGUF stores them (within FUSED_TOLERANCE), and with the reference (reported)

The figures go to ``<out>/<name>/medlora_export.json``. An export answers without medlora's
safety layer (no triage, notice or sources): serve it behind ``medlora serve`` or your own.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from medlora.config import RunConfig
from medlora.errors import UserError
from medlora.files import publish_dir, temporary_dir
from medlora.models import export as fused
from medlora.models.generation import load_with_adapter
from medlora.models.load import DEFAULT_TOKENIZER_DISTRIBUTION, DEFAULT_TOKENIZER_GGUF, convert, gguf_file, model_path
from medlora.registry import model_card
from medlora.registry.champion import resolve_adapter
from medlora.registry.names import registered_name

FUSED_TOLERANCE = 1e-4
REPORT = "medlora_export.json"


@dataclass(frozen=True)
class Exported:
    folder: str
    gguf: str | None
    adapter: str
    prompts: int
    fused_max_abs_diff: float  # fused folder read back vs base + adapter
    gguf_max_abs_diff: float | None  # GGUF read back vs fused weights rounded to the GGUF's dtype
    gguf_vs_adapter_max_abs_diff: float | None  # GGUF read back vs base + adapter (float16: the rounding)
    logit_range: float  # max - min of the reference logits, to judge the differences by
    adapter_strength: float = 1.0  # the LoRA updates fused x this (generation.adapter_strength), as medlora answers

    def summary(self) -> str:
        gguf = (f", GGUF {self.gguf_max_abs_diff:.2e} (vs base + adapter {self.gguf_vs_adapter_max_abs_diff:.2e})"
                if self.gguf else "")
        return (f"medlora: {self.adapter} exported to {self.folder}/ (mlx-lm folder){f' and {self.gguf}' if self.gguf else ''}\n"
                f"medlora: read back, next-token logits on {self.prompts} prompts: fused max |diff| "
                f"{self.fused_max_abs_diff:.2e}{gguf}; logit range {self.logit_range:.1f}. "
                f"Its LoRA updates fused x {self.adapter_strength:g} (generation.adapter_strength), as medlora answers. "
                "It answers without medlora's triage, notice and sources.")


def _loaded(cfg: RunConfig, tmp: Path):
    adapter_dir, label, version = resolve_adapter(cfg, cfg.export.adapter, tmp)
    model, tokenizer = load_with_adapter(cfg, adapter_dir)
    card = model_card.for_version(None, cfg, version) if version is not None else None
    slug = f"v{version.version}" if version is not None else re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-")
    return model, tokenizer, label, card, f"{registered_name(cfg)}-{slug}"


def _gguf_source(cfg: RunConfig) -> Path:
    if cfg.model.source == "hub":
        raise UserError(f"model {cfg.model.name} comes from the hub, without a GGUF to take the tokenizer from "
                        "(fix: export.gguf=none)")
    return gguf_file(cfg.model.gguf_distribution or DEFAULT_TOKENIZER_DISTRIBUTION,
                     cfg.model.gguf_file or DEFAULT_TOKENIZER_GGUF, cfg.model.name)


def _read_back_gguf(path: Path, questions: list[str], system_prompt: str | None):
    from mlx_lm.utils import load

    with temporary_dir("gguf") as tmp:
        convert(path, Path(tmp), "float32")
        model, tokenizer = load(tmp)
        return fused.next_token_logits(model, tokenizer, questions, system_prompt)


def _replace(final: Path, fill) -> None:
    """Publish a new ``final`` folder; an earlier export there is removed only once the new one is complete."""
    old = final.with_name(f".old-{final.name}") if final.exists() else None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    try:
        publish_dir(final, fill, marker=REPORT)
    except BaseException:
        if old is not None and not final.exists():
            old.rename(final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export(cfg: RunConfig) -> Exported:
    """Fuse, save, write GGUF, read both back and compare; return the figures (also in ``medlora_export.json``)."""
    from mlx_lm.utils import load

    questions = list(cfg.probes.questions[: cfg.export.check_prompts])
    system = cfg.data.system_prompt
    with temporary_dir("export") as tmp:
        model, tokenizer, label, card, name = _loaded(cfg, Path(tmp))
    reference = fused.next_token_logits(model, tokenizer, questions, system)
    fused.fuse_lora(model)
    final = cfg.export.out / name
    gguf_name = f"{name}.{'f16' if cfg.export.gguf == 'float16' else 'f32'}.gguf" if cfg.export.gguf != "none" else None
    source = _gguf_source(cfg) if gguf_name else None  # before any writing: a refusal leaves nothing behind

    def fill(folder: Path) -> None:
        fused.save_folder(model, tokenizer, Path(model_path(cfg.model, cfg.paths.models)), folder)
        if card:
            (folder / "README.md").write_text(card)
        if gguf_name:
            fused.write_gguf(model, fused.read_config(folder), source, folder / gguf_name, cfg.export.gguf, name)
        (folder / REPORT).write_text("{}")

    _replace(final, fill)
    fused_diff = fused.max_abs_difference(reference, fused.next_token_logits(*load(str(final)), questions, system))
    gguf_diff = gguf_vs_adapter = None
    if gguf_name:
        back = _read_back_gguf(final / gguf_name, questions, system)
        gguf_vs_adapter = fused.max_abs_difference(reference, back)
        fused.rounded_to(model, cfg.export.gguf)
        gguf_diff = fused.max_abs_difference(fused.next_token_logits(model, tokenizer, questions, system), back)
    spread = max(float(r.max() - r.min()) for r in reference)
    result = Exported(str(final), str(final / gguf_name) if gguf_name else None, label, len(questions),
                      fused_diff, gguf_diff, gguf_vs_adapter, spread, cfg.generation.adapter_strength)
    (final / REPORT).write_text(json.dumps(asdict(result), indent=2) + "\n")
    worst = max(fused_diff, gguf_diff or 0.0)
    if worst > FUSED_TOLERANCE:
        raise UserError(f"the export in {final} does not reproduce base + adapter: max logit difference {worst:.2e} "
                        f"> {FUSED_TOLERANCE:g} (figures in {REPORT}) (fix: report it; do not use this export)")
    return result
