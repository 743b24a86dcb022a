import dataclasses
import subprocess
import sys

import pytest

from conftest import REPO
from resnetf.config import Config, ConfigError, parse

# the flags that W&B sweeps and the docs rely on, with a value that differs from every default
CONTRACT = {"max_lr": 0.3, "pct_start": 0.25, "dropout": 0.2, "epochs": 3, "batch_size": 64,
            "data_dir": "/tmp/somewhere", "seed": 7, "wandb_mode": "offline",
            "wandb_project": "elsewhere"}


@pytest.mark.parametrize("form", ["equals", "space"])
def test_contract_flags_override_in_both_forms(form):
    args = []
    for name, value in CONTRACT.items():
        args += [f"--{name}={value}"] if form == "equals" else [f"--{name}", str(value)]
    cfg = parse(Config(), args)
    assert {name: getattr(cfg, name) for name in CONTRACT} == CONTRACT


def test_experiment_defaults_survive_unrelated_overrides():
    cfg = parse(Config(name="exp", max_lr=0.4, label_smoothing=0.2), ["--epochs=2"])
    assert (cfg.name, cfg.max_lr, cfg.label_smoothing, cfg.epochs) == ("exp", 0.4, 0.2, 2)


def test_help_lists_every_field_with_its_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as e:
        parse(Config(max_lr=0.4), ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for field in dataclasses.fields(Config):
        assert f"--{field.name}" in out, field.name
    assert "(default: 0.4)" in out


@pytest.mark.parametrize("flag, value", [("max_lr", "-0.1"), ("max_lr", "nan"), ("pct_start", "1.0"),
                                         ("pct_start", "0"), ("dropout", "1.0"), ("dropout", "-0.1"),
                                         ("epochs", "0"), ("batch_size", "0"), ("cutout", "40")])
def test_bad_values_exit_with_a_message_naming_the_field(flag, value, capsys):
    with pytest.raises(SystemExit) as e:
        parse(Config(), [f"--{flag}={value}"])
    assert e.value.code == 2
    assert f"--{flag}" in capsys.readouterr().err


def test_unknown_flag_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as e:
        parse(Config(), ["--max-learning-rate=0.1"])
    assert e.value.code != 0


def test_softmax_head_needs_the_resnetf_model():
    with pytest.raises(ConfigError, match="softmax_head"):
        Config(model="resnet9", softmax_head=True).validate()


def test_experiment_rejects_bad_value_before_touching_data(tmp_path):
    data_dir = tmp_path / "never-created"
    proc = subprocess.run([sys.executable, "experiments/oc_24ep.py", "--max_lr=-1",
                           f"--data_dir={data_dir}", f"--runs_dir={tmp_path / 'runs'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "max_lr" in proc.stderr
    assert not data_dir.exists() and not (tmp_path / "runs").exists()
