"""The LR range test: the sweep, its groups and units, the suggestion, the command line."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from resnetf.lr_range import lr_range_test, suggest_max_lr


def _toy_problem(seed=0):
    """Two Gaussian blobs, a linear classifier: SGD on it diverges somewhere around lr ~ 10."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4096, 20, generator=g)
    y = (x[:, :5].sum(1) > 0).long()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True, generator=g
    )
    model = torch.nn.Linear(20, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), loader


@pytest.mark.slow
def test_lr_range_test_suggests_a_sane_lr_and_leaves_model_and_optimizer_untouched():
    torch.manual_seed(0)
    model, optimizer, loader = _toy_problem()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lrs, losses, suggestion = lr_range_test(
        model,
        optimizer,
        torch.nn.CrossEntropyLoss(),
        loader,
        torch.device("cpu"),
        start_lr=1e-5,
        end_lr=100,
        num_iter=300,
    )
    assert 0.01 <= suggestion <= 3
    assert len(lrs) < 300  # stopped on divergence before the end of the sweep
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert optimizer.param_groups[0]["lr"] == 0.01


def _tiny_experiment(name: str, tiny_data, tmp_path):
    from resnetf.config import load_experiment

    return load_experiment(REPO / "experiments" / f"{name}.py").replace(
        data_dir=str(tiny_data),
        runs_dir=str(tmp_path),
        width=0.125,
        batch_size=20,
        workers=0,
        device="cpu",
        wandb_mode="disabled",
        progress=False,
    )


def _watch_steps(monkeypatch, read) -> list:
    """What `read(stepper)` gives before each step of the range test's sweep."""
    from resnetf import lr_range

    seen, real = [], lr_range.lr_range_test

    def watched(model, stepper, *args, **kwargs):
        step = stepper.step

        def record(*a, **k):
            seen.append(read(stepper))
            return step(*a, **k)

        stepper.step = record
        return real(model, stepper, *args, **kwargs)

    monkeypatch.setattr(lr_range, "lr_range_test", watched)
    return seen


@pytest.mark.slow
def test_the_sweep_keeps_every_groups_ratio_and_speaks_the_experiments_units(
    tiny_data, tmp_path, monkeypatch
):
    from resnetf import lr_range

    seen = _watch_steps(monkeypatch, lambda stepper: [g["lr"] for g in stepper.param_groups])
    cfg = _tiny_experiment("fast94", tiny_data, tmp_path)
    result = lr_range.run_lr_range_test(cfg, num_iter=12)
    assert len(seen) >= 3
    for others, bn_biases in seen:  # fast94's BatchNorm biases at 64x, all the way
        assert bn_biases == pytest.approx(64 * others)
    curve = json.loads((Path(result["run_dir"]) / "lr_range.json").read_text())
    per_step = 20 / (1024 * (1 + 1 / (1 - 0.85)))  # SGD's lr per unit of fast94's max_lr
    assert curve["sgd_lr"][0] == pytest.approx(1e-4) == pytest.approx(seen[0][0])
    assert curve["max_lr"][0] == pytest.approx(1e-4 / per_step)
    assert "per 1024 examples" in curve["units"]
    assert result["suggested_max_lr"] == pytest.approx(
        lr_range.suggest_max_lr(curve["max_lr"], curve["loss"])
    )


def test_suggestion_is_a_tenth_of_the_minimum():
    lrs = list(np.logspace(-4, 1, 50))
    losses = [(np.log10(lr) + 1) ** 2 for lr in lrs]  # lowest at lr = 0.1
    assert suggest_max_lr(lrs, losses, skip_end=0) == pytest.approx(
        lrs[int(np.argmin(losses))] / 10
    )


@pytest.mark.slow
def test_lr_range_test_from_the_command_line(tiny_data, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "experiments/lr_range_test.py",
            f"--data_dir={tiny_data}",
            f"--runs_dir={tmp_path}",
            "--width=0.0625",
            "--batch_size=20",
            "--workers=0",
            "--wandb_mode=offline",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / "lr_range.png").stat().st_size > 1000
    result = json.loads((run_dir / "lr_range.json").read_text())
    assert f"suggested max_lr {result['suggested_max_lr']:.4g}" in proc.stdout
    assert list(run_dir.glob("wandb/offline-run-*"))  # logged to W&B too


@pytest.mark.slow
def test_the_range_test_sweeps_muon_with_the_sgd_groups(tiny_data, tmp_path, monkeypatch):
    from resnetf import lr_range

    seen = _watch_steps(monkeypatch, lambda stepper: dict(stepper.lrs()))
    cfg = _tiny_experiment("fast94_muon", tiny_data, tmp_path)
    result = lr_range.run_lr_range_test(cfg, num_iter=12)
    assert len(seen) >= 3 and result["suggested_max_lr"] > 0
    from resnetf.optim import sgd_hyperparameters

    ratio = cfg.muon_lr / sgd_hyperparameters(cfg)[0]  # Muon's peak over the head's
    for lrs in seen:  # Muon's lr moves with the head's, in the recipe's ratio
        assert lrs["muon"] == pytest.approx(ratio * lrs["rest"])
        assert lrs["biases"] == pytest.approx(cfg.bn_bias_lr * lrs["rest"])
    assert seen[-1]["rest"] > 10 * seen[0]["rest"]
