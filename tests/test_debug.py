"""Debug modes: the whole path of a run in a few steps, a single batch learnt by heart, and a
profile; and the `resnetf` command."""

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO
from resnetf.cli import main
from resnetf.config import load_experiment

TINY = ["--workers=0", "--no_progress", "--batch_size=10"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "experiment", ["oc_24ep", "fast94", "fast94_muon", "fast94_speedrun", "seed_resnetf"]
)
def test_debug_fast_runs_the_whole_path_of_each_experiment(experiment, tiny_data, tmp_path):
    cfg = load_experiment(REPO / "experiments" / f"{experiment}.py")
    summary = main(
        cfg,
        [
            f"--data_dir={tiny_data}",
            f"--runs_dir={tmp_path}",
            "--debug=fast",
            "--width=0.125",
            *TINY,
        ],
    )
    d = Path(summary["run_dir"])
    assert d.parent == tmp_path / "debug" and d.name.startswith(f"{experiment}_fast_")
    for name in (
        "config.json",
        "summary.json",
        "model.pt",
        "curves.png",
        "confusion.png",
        "metrics.csv",
    ):
        assert (d / name).exists(), name
    steps = pd.read_csv(d / "steps.csv")
    assert len(steps) == 3 and steps["lr"].nunique() == 1  # a constant LR, no One Cycle
    assert summary["test_images"] <= 1024 and len(pd.read_csv(d / "metrics.csv")) == 1  # one batch
    assert not (d / "wandb").exists()


@pytest.mark.slow
def test_debug_overfit_learns_one_batch_or_says_it_cannot(tiny_data, tmp_path, capsys):
    cfg = load_experiment(REPO / "experiments" / "oc_24ep.py")
    args = [
        f"--data_dir={tiny_data}",
        f"--runs_dir={tmp_path}",
        "--debug=overfit",
        "--width=0.125",
        *TINY,
    ]
    result = main(cfg, args)
    assert result["accuracy"] == 1.0 and result["steps"] < 300
    assert "100% training accuracy on one batch of 10 images" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="cannot fit even that"):
        main(cfg, args + ["--max_lr=1e-9"])  # a net that cannot learn: the LR is nothing


@pytest.mark.slow
def test_debug_profile_writes_a_trace_and_the_top_operators(tiny_data, tmp_path, capsys):
    cfg = load_experiment(REPO / "experiments" / "fast94.py")
    result = main(
        cfg,
        [
            f"--data_dir={tiny_data}",
            f"--runs_dir={tmp_path}",
            "--debug=profile",
            "--width=0.125",
            *TINY,
        ],
    )
    trace = json.loads(Path(result["trace"]).read_text())
    assert any(e.get("name", "").startswith("aten::convolution") for e in trace["traceEvents"])
    assert "aten::" in (Path(result["run_dir"]) / "top_ops.txt").read_text()
    assert "Self CPU" in capsys.readouterr().out
