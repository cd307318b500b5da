"""The study's figures: drawn when the trials can say something, left out (and an old one removed) when not."""

from __future__ import annotations

import optuna
import pytest
from conftest import isolated_overrides
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import create_trial
from optuna.visualization import matplotlib as ov

from medlora.config import compose, to_study_config
from medlora.study.report import optuna_figure, write_study_outputs

SPACE = {"lr": FloatDistribution(1e-5, 1e-2, log=True), "layers": IntDistribution(2, 16)}


def study_of(complete: int) -> optuna.Study:
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    for i in range(complete):
        study.add_trial(create_trial(params={"lr": 1e-4 * (i + 1), "layers": 4 + i}, distributions=SPACE,
                                     value=2.0 - 0.1 * i))
    study.add_trial(create_trial(params={"lr": 1e-3, "layers": 8}, distributions=SPACE,
                                 state=optuna.trial.TrialState.PRUNED))
    return study


@pytest.mark.parametrize(("complete", "history", "importances"), [(0, False, False), (1, True, False), (3, True, True)])
def test_a_figure_is_drawn_only_when_the_complete_trials_can_fill_it(complete, history, importances, recwarn):
    study = study_of(complete)
    assert (optuna_figure(ov.plot_optimization_history, study) is not None) == history
    assert (optuna_figure(ov.plot_param_importances, study) is not None) == importances
    # Optuna's "importances will be equal" and "no complete trials" are answered by leaving the figure out
    assert not [w for w in recwarn if "equal" in str(w.message)]


def test_a_figure_the_trials_cannot_fill_replaces_an_earlier_one(tmp_path, model_cache, small_csv):
    study_cfg = to_study_config(compose(isolated_overrides(tmp_path, model_cache, small_csv)))
    write_study_outputs(study_of(3), study_cfg)
    figures = study_cfg.dir / "figures"
    assert (figures / "param_importances.png").is_file()
    write_study_outputs(study_of(1), study_cfg)  # e.g. the report of a study started again under the same name
    assert not (figures / "param_importances.png").exists()
    assert (figures / "optimization_history.png").is_file()
