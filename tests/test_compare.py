"""resnetf.compare: the table of runs, the figure, what it skips."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, run_dir_of
from resnetf import run
from resnetf.compare import compare_table


@pytest.mark.slow
def test_compare_lists_the_runs_and_only_the_fields_that_differ(tiny_cfg, tmp_path):
    a = run_dir_of(run(tiny_cfg.replace(analysis=False)))
    b = run_dir_of(run(tiny_cfg.replace(analysis=False, max_lr=0.05, label_smoothing=0.1)))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "resnetf.compare",
            str(tmp_path / "runs" / "*"),
            f"--out={tmp_path / 'cmp'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "cmp.csv")
    assert sorted(table["run"]) == sorted([a.name, b.name])
    assert {"max_lr", "label_smoothing"} <= set(table.columns)
    assert "epochs" not in table and "batch_size" not in table  # equal in both runs
    row = table.set_index("run").loc[b.name]
    assert row["max_lr"] == 0.05
    assert row["final_test_acc"] == json.loads((b / "summary.json").read_text())["final_test_acc"]
    assert (tmp_path / "cmp.png").stat().st_size > 10_000


@pytest.mark.slow
def test_the_compare_figure_colours_each_run_alike_and_names_it_by_what_differs(tiny_cfg):
    from matplotlib.colors import to_hex

    from resnetf.compare import compare_figure

    cfg = tiny_cfg.replace(analysis=False, epochs=3)
    runs = [
        run_dir_of(run(cfg.replace(max_lr=lr, seed=seed, batch_size=batch)))
        for lr, seed, batch in ((0.2, 0, 20), (0.2, 1, 20), (0.05, 0, 10))
    ]
    fig = compare_figure(runs, compare_table(runs))
    legend = {t.get_text() for t in fig.legends[0].get_texts()}
    assert legend == {
        "batch_size=20, max_lr=0.2, seed=0",
        "batch_size=20, max_lr=0.2, seed=1",
        "batch_size=10, max_lr=0.05, seed=0",
    }
    colours = {}
    for ax in fig.axes[:3]:  # LR, loss, accuracy: a run has one colour in every panel
        for line in ax.get_lines():
            colours.setdefault(line.get_gid(), set()).add(to_hex(line.get_color()))
    assert set(colours) == legend and all(len(c) == 1 for c in colours.values())
    assert len({next(iter(c)) for c in colours.values()}) == 3
    for line in fig.axes[0].get_lines():  # epochs on x, whatever the batch size
        assert line.get_xdata()[-1] == 3
    assert fig.axes[1].get_yscale() == "log"
    bars = [t.get_text() for t in fig.axes[3].get_yticklabels()]  # configs ranked, seeds pooled
    assert len(bars) == 2 and any(b.endswith("(n=2)") for b in bars)
    assert "shared:" in fig._suptitle.get_text()


@pytest.mark.slow
def test_compare_includes_trials_and_interrupted_runs_and_says_what_it_skipped(tiny_cfg, tmp_path):
    from resnetf.train import Context, RunStopped
    from resnetf.tune import tune

    runs = Path(tiny_cfg.runs_dir)
    plain = run_dir_of(run(tiny_cfg.replace(analysis=False, epochs=3)))
    tune(tiny_cfg.replace(tune=1, epochs=3, val_size=20, pruner="none", analysis=False))

    def interrupt(tracker):  # a Ctrl-C before the first epoch ended: no metrics yet
        raise RunStopped("interrupted", "Ctrl-C", failed=True)

    with pytest.raises(RunStopped):
        run(tiny_cfg.replace(name="cut"), Context(on_start=interrupt))
    subprocess.run(
        [
            sys.executable,
            "experiments/oc_24ep.py",
            "--seeds=2",
            "--epochs=2",
            f"--data_dir={tiny_cfg.data_dir}",
            f"--runs_dir={runs}",
            "--width=0.0625",
            "--batch_size=20",
            "--workers=0",
            "--wandb_mode=disabled",
            "--no_analysis",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    proc = subprocess.run(
        [sys.executable, "-m", "resnetf.compare", str(runs), f"--out={tmp_path / 'cmp'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "cmp.csv", dtype={"commit": str}).set_index("run")
    (trial,) = [r for r in table.index if "_trial0_" in r]
    (cut,) = [r for r in table.index if r.startswith("cut_")]
    assert len(table) == 5  # plain, trial, interrupted, and the two seeds
    assert table.loc[trial, "job_type"] == "trial" and table.loc[trial, "status"] == "finished"
    assert (
        table.loc[trial, "final_val_acc"]
        == json.loads((runs / "tune" / "tiny" / trial / "summary.json").read_text())[
            "final_val_acc"
        ]
    )
    assert pd.isna(table.loc[trial, "final_test_acc"])  # a trial never sees the test split
    assert table.loc[cut, "status"] == "interrupted" and pd.isna(table.loc[cut, "final_test_acc"])
    assert (
        table.loc[plain.name, "final_test_acc"]
        == json.loads((plain / "summary.json").read_text())["final_test_acc"]
    )
    assert "skipped 2 folders: 1 (job type seeds), 1 (job type study)" in proc.stderr
    commit = json.loads((plain / "config.json").read_text())["git_commit"]
    if commit:  # the repo is a git checkout: the table says which commit produced each run
        assert table.loc[plain.name, "commit"].startswith(commit[:10])


def test_runs_are_named_by_what_differs_and_configs_ranked_over_their_seeds():
    from resnetf.compare import ranking, run_labels, shared_note

    configs = [
        {"max_lr": 0.2, "seed": 0, "model": "resnet9"},
        {"max_lr": 0.2, "seed": 1, "model": "resnet9"},
        {"max_lr": 0.05, "seed": 0, "model": "resnet9"},
    ]
    labels = run_labels(configs, ["max_lr", "seed"])
    assert labels == ["max_lr=0.2, seed=0", "max_lr=0.2, seed=1", "max_lr=0.05, seed=0"]
    assert shared_note(configs) == "shared: model=resnet9"
    table = pd.DataFrame({"config_hash": ["a", "a", "b"], "best_val_acc": [0.80, 0.90, 0.95]})
    ranked = ranking(table, labels, ["max_lr", "seed"])
    assert ranked["label"].tolist() == ["max_lr=0.05", "max_lr=0.2"]  # best first, seeds pooled
    assert ranked["mean"].tolist() == pytest.approx([0.95, 0.85])
    assert ranked["runs"].tolist() == [1, 2] and ranked["metric"].iloc[0] == "best_val_acc"
