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


def _fake_run(root: Path, name: str, config_hash: str, seed: int, acc: float, **config) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    config = {"job_type": "train", "config_hash": config_hash, "seed": seed, **config}
    (folder / "config.json").write_text(json.dumps(config))
    summary = {"status": "finished", "final_test_acc": acc, "best_test_acc": acc}
    (folder / "summary.json").write_text(json.dumps({**summary, "train_seconds": 1.0}))
    pd.DataFrame({"epoch": [1], "train_loss": [1.0], "test_acc": [acc]}).to_csv(
        folder / "metrics.csv", index=False
    )
    return folder


def test_compare_against_a_baseline_gives_each_config_its_difference_and_interval(tmp_path):
    from resnetf import compare, stats

    runs = tmp_path / "runs"
    base, flipless, single = [0.90, 0.91, 0.92], [0.88, 0.885, 0.89], [0.95]
    for seed, acc in enumerate(base):
        _fake_run(runs, f"base_s{seed}", "aaaa", seed, acc, cutout=8)
    for seed, acc in enumerate(flipless):
        _fake_run(runs, f"noflip_s{seed}", "bbbb", seed, acc, cutout=0)
    _fake_run(runs, "one_s0", "cccc", 0, single[0], cutout=4)
    out = tmp_path / "cmp"
    for selector in ("aaaa", str(runs / "base_s*")):  # a config hash, or its run folders
        table = compare.main([str(runs), "--baseline", selector, f"--out={out}"])
        row = table.set_index("run").loc["noflip_s0"]
        expected = stats.welch(base, flipless)
        assert row["diff"] == pytest.approx(expected.diff)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((expected.low, expected.high))
        assert row["p_value"] == pytest.approx(expected.p_value)
        assert pd.isna(table.set_index("run").loc["one_s0", "ci_low"])  # one seed: no interval
        assert pd.isna(table.set_index("run").loc["base_s0", "diff"])
    saved = pd.read_csv(out.with_suffix(".csv"))
    assert {"diff", "ci_low", "ci_high", "p_value"} <= set(saved.columns)
    found, _ = compare.find_runs([str(runs)])
    table = compare.compare_table(found)
    labels = compare.config_labels([compare.load(r)["config"] for r in found])
    fig = compare.compare_figure(found, table, compare.differences(table, labels, "aaaa"))
    titles = [ax.get_title() for ax in fig.axes]
    assert any("differences to the baseline" in t for t in titles)


@pytest.mark.parametrize(
    "selector, message",
    [("zzzz", "is no config hash"), ("*", "matches runs of 2 configs"), ("one", "has 1 run")],
)
def test_a_baseline_that_cannot_give_an_interval_is_one_line(tmp_path, selector, message):
    from resnetf import compare

    runs = tmp_path / "runs"
    for seed in range(2):
        _fake_run(runs, f"base_s{seed}", "aaaa", seed, 0.9 + seed / 100, cutout=8)
    _fake_run(runs, "one_s0", "one", 0, 0.95, cutout=4)
    pattern = str(runs / selector) if selector == "*" else selector
    with pytest.raises(SystemExit, match=message):
        compare.main([str(runs), "--baseline", pattern, f"--out={tmp_path / 'cmp'}"])
