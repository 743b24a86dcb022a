"""--seeds N: N runs and their spread."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from resnetf.compare import compare_table, find_runs


@pytest.mark.slow
def test_seeds_runs_n_times_and_reports_the_spread(tiny_data, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "experiments/oc_24ep.py",
            "--seeds=2",
            "--seed=3",
            f"--data_dir={tiny_data}",
            f"--runs_dir={tmp_path}",
            "--epochs=2",
            "--batch_size=20",
            "--width=0.0625",
            "--workers=0",
            "--wandb_mode=disabled",
            "--no_progress",
            "--no_analysis",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    runs, skipped = find_runs([str(tmp_path)])
    assert skipped == {"job type seeds": 1}  # the aggregate is not a training run
    assert sorted(json.loads((r / "config.json").read_text())["seed"] for r in runs) == [3, 4]
    (agg,) = tmp_path.glob("oc_24ep_seeds_*")
    result = json.loads((agg / "summary.json").read_text())
    accs = [json.loads((r / "summary.json").read_text())["final_test_acc"] for r in runs]
    assert result["runs"] == 2 and result["test_acc_mean"] == np.mean(accs)
    assert result["test_acc_std"] == np.std(accs, ddof=1)
    assert len(pd.read_csv(agg / "seeds.csv")) == 2
    assert "over seeds 3..4: test accuracy" in proc.stdout
    assert len(compare_table(runs)) == 2


def test_the_spread_of_seeds_is_the_mean_and_the_sample_std():
    from resnetf.repeat import fmt, spread

    assert spread([0.9, 0.92]) == (pytest.approx(0.91), pytest.approx(0.0141421356))
    assert spread([0.9]) == (0.9, None)
    assert fmt(0.91, 0.01414, 100) == "91.00 +- 1.41" and fmt(0.9, None, 100) == "90.00 +- n/a"


def _tiny_flags(data, runs) -> list[str]:
    return [
        f"--data_dir={data}",
        f"--runs_dir={runs}",
        "--epochs=2",
        "--batch_size=20",
        "--width=0.0625",
        "--workers=0",
        "--device=cpu",
        "--wandb_mode=disabled",
        "--no_progress",
        "--no_analysis",
    ]


@pytest.mark.slow
def test_seeds_with_a_target_test_that_the_mean_reaches_it(tiny_data, tmp_path, capsys):
    from scipy import stats as scipy_stats

    from resnetf import main
    from resnetf.config import load_experiment

    defaults = load_experiment(REPO / "experiments" / "oc_24ep.py")
    flags = ["--seeds=3", "--target_acc=0.05", *_tiny_flags(tiny_data, tmp_path)]
    result = main(defaults, flags)
    accs = [
        json.loads(p.read_text())["final_test_acc"]
        for p in tmp_path.glob("oc_24ep_s[0-9]*/summary.json")
    ]
    expected = scipy_stats.ttest_1samp(accs, 0.05, alternative="greater")
    assert result["p_value"] == pytest.approx(expected.pvalue)
    assert "one-sided t-test" in capsys.readouterr().out


@pytest.mark.slow
def test_a_diverged_seed_is_recorded_and_the_others_run(tiny_data, tmp_path, capsys):
    from resnetf import main
    from resnetf.config import load_experiment

    defaults = load_experiment(REPO / "experiments" / "oc_24ep.py")
    result = main(defaults, ["--seeds=2", "--max_lr=1e30", *_tiny_flags(tiny_data, tmp_path)])
    assert result["runs"] == 2 and result["n_diverged"] == 2
    assert capsys.readouterr().err.count("diverged") >= 2
