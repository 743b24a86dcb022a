import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from resnetf.config import Config, ConfigError, parse

# the flags that W&B sweeps and the docs rely on, with a value that differs from every default
CONTRACT = {
    "max_lr": 0.3,
    "pct_start": 0.25,
    "dropout": 0.2,
    "epochs": 3,
    "batch_size": 64,
    "data_dir": "/tmp/somewhere",
    "seed": 7,
    "wandb_mode": "offline",
    "wandb_project": "elsewhere",
}


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


@pytest.mark.parametrize(
    "flag, value",
    [
        ("max_lr", "-0.1"),
        ("max_lr", "nan"),
        ("pct_start", "1.0"),
        ("pct_start", "0"),
        ("dropout", "1.0"),
        ("dropout", "-0.1"),
        ("epochs", "0"),
        ("batch_size", "0"),
        ("cutout", "40"),
        ("contrast", "1.0"),
        ("brightness", "-0.1"),
        ("muon_rescale_interval", "0"),
        ("muon_weight_decay", "-1e-3"),
        ("whiten_images", "0"),
        ("stem_bias_epochs", "-0.2"),
    ],
)
def test_bad_values_exit_with_a_message_naming_the_field(flag, value, capsys):
    with pytest.raises(SystemExit) as e:
        parse(Config(), [f"--{flag}={value}"])
    assert e.value.code == 2
    assert f"--{flag}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value",
    [
        ("objectives", "val_acc,flops"),
        ("objectives", "pflop"),  # without val_acc
        ("target_acc", "90"),
        ("target_acc", "0"),
        ("trial_seeds", "0"),
    ],
)
def test_bad_tuning_values_are_one_line(flag, value, capsys):
    with pytest.raises(SystemExit) as e:
        parse(Config(), [f"--{flag}={value}", "--tune=4", "--retrain_best", "--pruner=none"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --{flag}: ") and len(err.strip().splitlines()) == 1


def test_every_field_declares_its_group_and_whether_it_changes_a_result(monkeypatch):
    from resnetf import config

    declared = config.declarations()
    assert set(declared) == {f.name for f in dataclasses.fields(Config)}
    assert declared["label_smoothing"] == ("optimisation", True)
    assert declared["workers"] == ("data", False)

    @dataclasses.dataclass
    class Undeclared(Config):
        new_knob: int = 0

    monkeypatch.setattr(config, "Config", Undeclared)
    with pytest.raises(TypeError, match="new_knob has no group"):
        config.declarations()


def test_the_config_hash_reads_the_declarations():
    from resnetf.config import config_hash

    base = config_hash(Config())
    assert config_hash(Config(workers=3, progress=False, wandb_mode="offline", seed=4)) == base
    assert config_hash(Config(label_smoothing=0.1)) != base
    assert config_hash(Config(amp_dtype="half")) != base


def test_a_field_added_at_its_default_keeps_every_earlier_hash(monkeypatch):
    # the runs an ablation finished are found by their hash: a new field whose default does
    # what the code did before must not change the hash of any config that leaves it there
    import dataclasses

    from resnetf import config
    from resnetf.config import MODEL, config_hash

    fast94 = config.load_experiment(REPO / "experiments" / "fast94.py")
    before = [config_hash(c) for c in (Config(), fast94, fast94.replace(dropout=0.2))]

    @dataclasses.dataclass
    class Later(Config):
        new_knob: float = MODEL(0.0)

    monkeypatch.setattr(config, "Config", Later)
    later = [Later(**c.to_dict()) for c in (Config(), fast94, fast94.replace(dropout=0.2))]
    assert [config_hash(c) for c in later] == before
    assert config_hash(later[1].replace(new_knob=0.5)) != before[1]


@pytest.mark.parametrize(
    "name, text, value",
    [
        ("alternating_flip", "False", False),
        ("tta", "none", "none"),
        ("lookahead", "0", 0.0),
        ("batch_size", "256.0", 256),
        ("workers", "none", None),
        ("amp_dtype", "half", "half"),
    ],
)
def test_coerce_reads_a_value_as_its_field_does(name, text, value):
    from resnetf.config import coerce

    assert coerce(name, text) == value and type(coerce(name, text)) is type(value)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("batch_size", "7.5", "batch_size: '7.5' is not an integer"),
        ("tta", "bogus", "tta: 'bogus' is not one of none, flip, flip_translate"),
        ("max_lr", "fast", "max_lr: 'fast' is not a number"),
        ("no_such_field", "1", "no_such_field: no such Config field"),
    ],
)
def test_coerce_refuses_what_the_field_cannot_hold(name, text, message):
    from resnetf.config import coerce

    with pytest.raises(ConfigError, match=f"^{message}"):
        coerce(name, text)


def test_unknown_flag_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as e:
        parse(Config(), ["--max-learning-rate=0.1"])
    assert e.value.code != 0


def test_softmax_head_needs_the_resnetf_model():
    with pytest.raises(ConfigError, match="softmax_head"):
        Config(model="resnet9", softmax_head=True).validate()


@pytest.mark.slow
def test_experiment_rejects_bad_value_before_touching_data(tmp_path):
    data_dir = tmp_path / "never-created"
    proc = subprocess.run(
        [
            sys.executable,
            "experiments/oc_24ep.py",
            "--max_lr=-1",
            f"--data_dir={data_dir}",
            f"--runs_dir={tmp_path / 'runs'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "max_lr" in proc.stderr
    assert not data_dir.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "field, value",
    [
        ("backend", "GPU"),
        ("pad_mode", "zeros"),
        ("model", "resnet18"),
        ("anneal_strategy", "cosine"),
        ("pruner", "asha"),
        ("wandb_mode", "Offline"),
    ],
)
def test_a_config_built_in_python_gets_its_choices_checked(field, value):
    # tyro checks choices on the command line; a notebook or a script builds Config directly
    with pytest.raises(ConfigError, match=f"^{field}: must be one of"):
        Config(**{field: value}).validate()


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"tune": 5, "seeds": 3}, "seeds"),
        ({"tune": 5, "lr_range_test": True}, "lr_range_test"),
        ({"seeds": 2, "lr_range_test": True}, "lr_range_test"),
        ({"retrain_best": True}, "retrain_best"),
        ({"tune": 5, "eval_every": 0, "pruner": "median"}, "eval_every"),
        ({"trial_analysis": True}, "trial_analysis"),
        ({"target_acc": 0.9}, "target_acc"),
        ({"trial_seeds": 3}, "trial_seeds"),
        ({"objectives": "val_acc,pflop"}, "objectives"),
        ({"tta_fraction": 0.25}, "tta_fraction"),
        ({"ema": 0.99, "amp_dtype": "half"}, "ema"),
        ({"tune": 5, "objectives": "val_acc,val_acc", "pruner": "none"}, "objectives"),
        ({"tune": 5, "objectives": "val_acc,pflop", "pruner": "median"}, "pruner"),
        ({"tune": 5, "trial_seeds": 3, "pruner": "median"}, "pruner"),
        ({"tune": 5, "pruner": "halving"}, "pruner"),
        ({"tune": 5, "trial_seeds": 3, "pruner": "wilcoxon"}, "pruner"),
        ({"tune": 5, "trial_seeds": 3, "prune_min_seeds": 3}, "prune_min_seeds"),
        ({"tune": 5, "objectives": "pflop", "min_val_acc": 0.9, "pruner": "halving"}, "pruner"),
        ({"activation": "silu"}, "activation"),
        ({"tta": "flip", "tta_weights": "uniform"}, "tta_weights"),
        ({"tta": "flip_translate", "tta_scope": "split"}, "tta_scope"),
        ({"half_batchnorm": True, "amp_dtype": "bf16"}, "half_batchnorm"),
    ],
)
def test_combinations_that_mean_nothing_are_refused(changes, field):
    with pytest.raises(ConfigError, match=f"^{field}: "):
        Config(**changes).validate()


def test_tuning_without_pruning_may_evaluate_only_at_the_end():
    Config(tune=5, eval_every=0, pruner="none").validate()


@pytest.mark.parametrize(
    "changes, pruner",
    [
        ({}, "median"),
        ({"eval_every": 0}, "none"),  # nothing per epoch to prune on
        ({"trial_seeds": 3}, "halving"),
        ({"objectives": "val_acc,pflop"}, "none"),  # Optuna cannot prune several objectives
        ({"objectives": "pflop", "min_val_acc": 0.9, "trial_seeds": 3}, "bound"),
        ({"trial_seeds": 5, "pruner": "wilcoxon"}, "wilcoxon"),
    ],
)
def test_the_default_pruner_is_the_one_that_fits_the_study(changes, pruner):
    cfg = Config(tune=5, **changes).validate()
    assert cfg.pruner_kind == pruner


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"objectives": "pflop"}, "with --min_val_acc"),  # a cost alone needs its floor
        ({"objectives": "pflop,val_acc", "min_val_acc": 0.9}, "one cost under the accuracy"),
        ({"objectives": "pflop", "min_val_acc": 1.5}, "a fraction in (0, 1]"),
    ],
)
def test_a_constrained_study_is_one_cost_and_its_floor(changes, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Config(tune=5, **changes).validate()


def test_help_is_grouped_and_keeps_every_flat_flag_name(capsys, monkeypatch):
    from resnetf.config import groups

    GROUPS = groups()

    monkeypatch.setenv("COLUMNS", "110")  # one column of boxes
    with pytest.raises(SystemExit):
        parse(Config(), ["--help"])
    out = capsys.readouterr().out
    boxes, current = {}, None
    for line in out.splitlines():  # a box starts with "<group> options" (framed on a terminal)
        title = re.match(r"^\W*(\w+) options\b", line)
        if title:
            current = boxes.setdefault(title.group(1), [])
        elif current is not None:
            current.append(line)
    boxes = {k: "\n".join(v) for k, v in boxes.items()}
    assert set(GROUPS) <= set(boxes)
    for group, (_, fields) in GROUPS.items():
        for name in fields:
            assert f"--{name} " in boxes[group] or f"--{name}," in boxes[group], (group, name)
    assert "--max_lr" in boxes["schedule"] and "--seeds" in boxes["run"]
    assert "--resume" in boxes["run"] and "--lr_range_test" in boxes["run"]


def test_run_records_what_produced_it(tiny_cfg):
    import json

    import torch

    from resnetf import run

    d = Path(run(tiny_cfg.replace(analysis=False, epochs=1, pct_start=0.5))["run_dir"])
    config = json.loads((d / "config.json").read_text())
    assert (
        config["torch"] == torch.__version__.split("+")[0] or config["torch"] == torch.__version__
    )
    assert {"albumentations", "wandb", "optuna", "device_name", "git_dirty"} <= set(config)
    if (REPO / ".git").exists():
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        assert config["git_commit"] == head and isinstance(config["git_dirty"], bool)


def test_no_function_of_the_package_is_longer_than_a_screen():
    import ast

    for path in sorted((REPO / "resnetf").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 60, f"{path.name}: {node.name} has {length} lines"


def test_an_experiment_that_imports_its_neighbour_loads_under_every_entry_point(tmp_path):
    # lr_range_test.py does `from oc_24ep import CONFIG`: fine under `python FILE`, and it must
    # be under `resnetf train|ablate|bench` and a launcher task too, which load the file by path
    script = (
        "from resnetf.config import load_experiment; "
        f"print(load_experiment({str(REPO / 'experiments' / 'lr_range_test.py')!r}).name)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]


# --- where a field acts: declared with it, one rule reads it ------------------------------------

OC = REPO / "experiments" / "oc_24ep.py"
MUON = REPO / "experiments" / "fast94_muon.py"
SPEEDRUN = REPO / "experiments" / "fast94_speedrun.py"


@pytest.mark.parametrize(
    "experiment, flags, message",
    [
        (OC, ["--muon_lr=0.3"], "muon_lr: acts only with --optimizer muon (here --optimizer=sgd)"),
        (OC, ["--model=resnet9", "--whiten_images=960"], "whiten_images: acts only with --model "),
        (OC, ["--activation=silu"], "activation: acts only with --model whitened_convnet"),
        (MUON, ["--pct_start=0.3"], "pct_start: acts only with --schedule one_cycle"),
        (OC, ["--lookahead_every=3"], "lookahead_every: acts only with --lookahead other than 0"),
        (OC, ["--pad=0", "--pad_mode=constant"], "pad_mode: acts only with --pad other than 0"),
        (MUON, ["--optimizer=sgd", "--muon_lr=0.3"], "muon_lr: acts only with --optimizer muon"),
    ],
)
def test_a_flag_where_it_does_nothing_is_one_line(experiment, flags, message, capsys):
    from resnetf.config import load_experiment

    with pytest.raises(SystemExit) as e:
        parse(load_experiment(experiment), flags)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and message in err[0], err


def test_a_switch_drops_what_it_switches_off_and_the_hash_counts_only_what_acts():
    from resnetf.config import config_hash, field_defaults, load_experiment

    recipe, defaults = load_experiment(SPEEDRUN), field_defaults()
    sgd = parse(recipe, ["--optimizer=sgd"])
    muon_fields = [n for n in defaults if n.startswith("muon_")]
    assert any(getattr(recipe, n) != defaults[n] for n in muon_fields)  # the recipe sets some
    assert all(getattr(sgd, n) == defaults[n] for n in muon_fields)  # dropped with the switch
    assert sgd.idle() == [] and sgd.max_lr == recipe.max_lr  # the rest is the recipe's
    # written by hand without the Muon fields, the same run: the same hash (W&B group)
    by_hand = recipe.replace(optimizer="sgd", **{n: defaults[n] for n in muon_fields})
    assert config_hash(sgd) == config_hash(by_hand)
    # a field that does nothing on a config (built unvalidated in Python) moves no hash
    assert config_hash(Config(muon_lr=0.5)) == config_hash(Config())
    assert config_hash(Config(optimizer="muon", muon_lr=0.5)) != config_hash(
        Config(optimizer="muon")
    )
    # one reset can idle the next: --tta none on the speedrun drops tta_fraction, then tta_scope
    plain = parse(load_experiment(SPEEDRUN), ["--tta=none"])
    assert (plain.tta_fraction, plain.tta_scope, plain.tta_weights) == (1.0, "batch", "airbench")


def test_every_acts_declaration_names_real_fields_and_values_they_can_hold():
    from resnetf.config import Not, acts_where, check_value

    declared = acts_where()
    assert {"muon_lr", "whiten_images", "activation", "pct_start", "tta_scope"} <= set(declared)
    for name, where in declared.items():
        for field, condition in where.conditions.items():
            assert field != name and field in Config.__dataclass_fields__, (name, field)
            values = (
                (condition.value,)
                if isinstance(condition, Not)
                else condition
                if isinstance(condition, tuple)
                else (condition,)
            )
            for value in values:
                check_value(field, value)
            # a field it reads that acts only somewhere: its conditions are repeated here
            # (Config.settled's one pass relies on it)
            if field in declared:
                assert declared[field].conditions.items() <= where.conditions.items(), name


def test_an_ablation_change_that_does_nothing_is_refused_and_a_switch_is_not():
    from resnetf.ablate import variants
    from resnetf.config import field_defaults, load_experiment

    with pytest.raises(ConfigError, match="vary muon_lr=0.3: muon_lr: acts only with --optimizer"):
        variants(load_experiment(OC), ["muon_lr=0.3"])
    (_, base), (label, sgd) = variants(load_experiment(SPEEDRUN), ["optimizer=sgd"])
    assert base.muon_weight_decay != field_defaults()["muon_weight_decay"]
    assert (
        label == "optimizer=sgd" and sgd.muon_weight_decay == field_defaults()["muon_weight_decay"]
    )


def test_a_sweep_parameter_that_acts_in_no_trial_is_refused(tmp_path):
    from resnetf.config import load_experiment
    from resnetf.search_space import read_space
    from resnetf.tune import check_space

    sweep = tmp_path / "muon.yaml"
    sweep.write_text(
        "parameters:\n  muon_lr: {min: 0.1, max: 0.5}\n  max_lr: {min: 0.1, max: 0.3}\n"
    )
    cfg = load_experiment(OC).replace(sweep=str(sweep))
    with pytest.raises(ConfigError, match="searches muon_lr, which acts only with --optimizer"):
        check_space(cfg, read_space(str(sweep)), 45_000)
    # beside the switch it needs, it acts in some trials and is dropped in the others
    sweep.write_text(
        "parameters:\n  muon_lr: {min: 0.1, max: 0.5}\n  optimizer: {values: [sgd, muon]}\n"
    )
    check_space(cfg, read_space(str(sweep)), 45_000)


def test_under_wandbs_agent_an_idle_swept_field_is_dropped_not_refused(monkeypatch, capsys):
    from resnetf.config import field_defaults, load_experiment

    # a W&B sweep over optimizer and muon_lr (no conditional parameters) sends both to SGD runs
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc")
    monkeypatch.setenv("WANDB_RUN_ID", "r1")
    cfg = parse(load_experiment(OC), ["--optimizer=sgd", "--muon_lr=0.3", "--max_lr=0.2"])
    assert cfg.muon_lr == field_defaults()["muon_lr"] and cfg.max_lr == 0.2
    assert "note: muon_lr left at default: idle on this run" in capsys.readouterr().err


def test_a_study_point_that_switches_a_part_off_trains_without_its_idle_fields():
    import optuna

    from resnetf import search_space
    from resnetf.config import field_defaults, load_experiment
    from resnetf.tune import trial_config

    # optimizer and muon_lr searched together: the SGD points carry a muon_lr that does nothing
    cfg = load_experiment(OC)
    point = optuna.trial.FixedTrial({"optimizer": "sgd", "muon_lr": 0.3})
    params = {"optimizer": {"values": ["sgd", "muon"]}, "muon_lr": {"min": 0.1, "max": 0.5}}
    space = {k: search_space.parse_param(k, v) for k, v in params.items()}
    trial = trial_config(cfg, point, "s", space)
    assert trial.validate().muon_lr == field_defaults()["muon_lr"]  # the run trains, as SGD
    muon = trial_config(
        cfg, optuna.trial.FixedTrial({"optimizer": "muon", "muon_lr": 0.3}), "s", space
    )
    assert muon.validate().muon_lr == 0.3
