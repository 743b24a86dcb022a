"""The search space, read from the sweep file: each W&B distribution becomes the Optuna
suggestion of the same distribution, anything else is one clear error, and a parameter added to
the file is tuned."""

import optuna
import pytest
import yaml

from conftest import REPO
from resnetf import search_space
from resnetf.config import Config, ConfigError


def _space(tmp_path, parameters: dict) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"program": "experiments/oc_24ep.py", "parameters": parameters}))
    return str(path)


def test_each_distribution_maps_to_optunas_of_the_same_kind(tmp_path):
    space = search_space.read_space(
        _space(
            tmp_path,
            {
                "max_lr": {"distribution": "log_uniform_values", "min": 0.01, "max": 1.0},
                "pct_start": {"distribution": "uniform", "min": 0.1, "max": 0.5},
                "epochs": {"distribution": "int_uniform", "min": 2, "max": 6},
                "dropout": {"distribution": "q_uniform", "min": 0.0, "max": 0.3, "q": 0.1},
                "tta": {"distribution": "categorical", "values": ["none", "flip"]},
                "flip": {"value": False},
                "batch_size": {"min": 64, "max": 256},  # no distribution: W&B infers int_uniform
                "label_smoothing": {"values": [0.0, 0.2]},  # ... and categorical
            },
        )
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        point = search_space.suggest(trial, space)
        study.tell(trial, 0.0)
    d = study.trials[-1].distributions
    assert isinstance(d["max_lr"], optuna.distributions.FloatDistribution) and d["max_lr"].log
    assert not d["pct_start"].log and (d["pct_start"].low, d["pct_start"].high) == (0.1, 0.5)
    assert isinstance(d["epochs"], optuna.distributions.IntDistribution)
    assert isinstance(d["batch_size"], optuna.distributions.IntDistribution)
    assert d["dropout"].step == 0.1
    assert d["tta"].choices == ("none", "flip") and d["label_smoothing"].choices == (0.0, 0.2)
    assert "flip" not in d and point["flip"] is False  # fixed: set, not searched
    assert {round(t.params["dropout"], 6) for t in study.trials} <= {0.0, 0.1, 0.2, 0.3}
    Config().replace(**point).validate()


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"max_lrr": {"min": 0.1, "max": 1.0}}, "'max_lrr', which is no Config field"),
        ({"max_lr": {"distribution": "normal", "mu": 0, "sigma": 1}}, "distribution 'normal'"),
        ({"max_lr": {"distribution": "log_uniform", "min": -5, "max": 0}}, "'log_uniform'"),
        ({"max_lr": {"distribution": "uniform", "min": 1.0, "max": 0.1}}, "min < max"),
        ({"max_lr": {"distribution": "uniform", "min": 0.1}}, "needs 'max'"),
        ({"max_lr": {"distribution": "uniform", "min": "low", "max": 1}}, "min 'low' is not a"),
        ({"max_lr": {"distribution": "uniform", "min": [1], "max": 2}}, "min [1] is not a number"),
        ({"epochs": {"distribution": "int_uniform", "min": 2.5, "max": 6}}, "not an integer"),
        ({"dropout": {"distribution": "q_uniform", "min": 0, "max": 0.3, "q": 0}}, "q > 0"),
    ],
)
def test_what_the_study_cannot_search_is_one_line_naming_it(tmp_path, parameters, message):
    with pytest.raises(ConfigError, match="sweep: ") as e:
        search_space.read_space(_space(tmp_path, parameters))
    assert message in str(e.value)


def test_experiments_name_their_sweep_file_and_it_is_found_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for experiment, sweep in (("oc_24ep", "sweeps/lr.yaml"), ("fast94", "sweeps/fast94.yaml")):
        from resnetf.config import load_experiment

        cfg = load_experiment(REPO / "experiments" / f"{experiment}.py")
        assert cfg.sweep == sweep
        assert set(search_space.read_space(cfg.sweep)) == {"max_lr", "pct_start", "dropout"}
    fast = search_space.read_space("sweeps/fast94.yaml")["max_lr"]
    assert (fast.low, fast.high) == (3.0, 40.0)  # the decoupled units of fast94's max_lr


@pytest.mark.parametrize(
    "name, spec, message",
    [
        ("batch_size", {"values": [128, 7.5]}, "'batch_size' allows a value its field refuses"),
        ("max_lr", {"values": ["fast", 0.1]}, "max_lr: 'fast' is not a number"),
        ("tta", {"values": ["none", "bogus"]}, "tta: 'bogus' is not one of"),
        ("batch_size", {"distribution": "uniform", "min": 128, "max": 512}, "draws floats"),
    ],
)
def test_a_value_its_field_cannot_take_is_refused_before_any_trial(name, spec, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        search_space.read_space(_space(tmp_path, {name: spec}))


def test_values_the_fields_take_pass(tmp_path):
    space = search_space.read_space(
        _space(
            tmp_path,
            {
                "batch_size": {"values": [128, 256]},
                "epochs": {"min": 2, "max": 6},  # int_uniform, on a float field
                "tta": {"values": ["none", "flip"]},
                "flip": {"value": True},
                "ema": {"distribution": "uniform", "min": 0.0, "max": 0.9},
            },
        )
    )
    assert space["epochs"].distribution == "int_uniform"


def test_a_bound_yaml_reads_as_a_string_is_the_number_it_spells(tmp_path):
    # YAML 1.1 (PyYAML) reads 1e-5, without a dot, as the string "1e-5"
    path = tmp_path / "s.yaml"
    path.write_text(
        "parameters:\n  weight_decay:\n    distribution: log_uniform_values\n"
        "    min: 1e-5\n    max: 1e-3\n"
    )
    (param,) = search_space.read_space(str(path)).values()
    assert (param.low, param.high) == (1e-5, 1e-3)
