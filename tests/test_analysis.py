"""After-training analysis, run comparison, --seeds, and the model summary."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import REPO, read_wandb_history, run_dir_of
from resnetf import run
from resnetf.analysis import confusion_matrix
from resnetf.compare import compare_table, find_runs


def test_analysis_files_exist_with_expected_sizes_and_agree_with_the_accuracy(tiny_cfg):
    summary = run(tiny_cfg.replace(wandb_mode="offline", gradcam_images=3))
    d = run_dir_of(summary)
    sizes = {}
    for name in ("misclassified.png", "confusion.png", "gradcam.png"):
        with Image.open(d / name) as image:
            sizes[name] = image.size
    # Grad-CAM is sized to its rows: 3 images, 3 columns (image, predicted, true)
    assert sizes["gradcam.png"][1] > sizes["gradcam.png"][0] > 600
    cm = pd.read_csv(d / "confusion.csv", index_col=0).to_numpy()
    assert cm.shape == (10, 10) and cm.sum() == 50  # every test image, once
    assert np.trace(cm) / cm.sum() == summary["final_test_acc"]
    per_class = pd.read_csv(d / "per_class.csv")
    assert per_class["images"].tolist() == cm.sum(1).tolist()
    np.testing.assert_allclose(per_class["accuracy"], np.diag(cm) / cm.sum(1))
    logged = {key.split("/")[0] for row in read_wandb_history(d) for key in row}
    assert {
        "misclassified",
        "confusion_matrix",
        "gradcam",
        "confusion_table",
        "per_class_accuracy",
    } <= logged
    summary_txt = (d / "model_summary.txt").read_text()
    assert "Total params" in summary_txt and f"{summary['parameters']:,}" in summary_txt


def test_the_analysis_reuses_the_final_evaluation_instead_of_a_second_tta_pass(
    tiny_cfg, monkeypatch
):
    from resnetf import analysis

    def second_pass(*args, **kwargs):
        raise AssertionError("the analysis ran the net over the test split again")

    monkeypatch.setattr(analysis, "logits", second_pass)
    summary = run(tiny_cfg.replace(tta="flip", gradcam_images=1))
    d = run_dir_of(summary)
    assert "analysis_error" not in summary
    cm = pd.read_csv(d / "confusion.csv", index_col=0).to_numpy()
    assert cm.sum() == 50 and np.trace(cm) / cm.sum() == summary["final_test_acc"]


def test_the_misclassified_images_come_most_confident_first():
    from resnetf.analysis import most_confident_errors

    labels = np.array([0, 1, 2, 3, 4])
    probs = np.full((5, 5), 0.05)
    probs[[0, 1, 2, 3, 4], [1, 1, 0, 0, 0]] = [0.6, 0.9, 0.8, 0.3, 0.95]  # image 1 is right
    assert most_confident_errors(labels, probs, 10).tolist() == [4, 2, 0, 3]
    assert most_confident_errors(labels, probs, 2).tolist() == [4, 2]


def test_figures_say_which_split_they_show_and_grad_cam_grows_with_its_images(tiny_cfg):
    from resnetf.analysis import confusion_title

    cm = np.array([[3, 1], [0, 4]])
    assert confusion_title(cm, "val") == "confusion matrix, val split (8 images): accuracy 87.50%"
    heights = {}
    for count in (1, 4):
        d = run_dir_of(run(tiny_cfg.replace(gradcam_images=count)))
        with Image.open(d / "gradcam.png") as image:
            heights[count] = image.size[1]
    assert heights[4] > 3 * heights[1] * 0.8


def test_confusion_matrix_rows_are_true_classes():
    cm = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_analysis_can_be_switched_off(tiny_cfg):
    d = run_dir_of(run(tiny_cfg.replace(analysis=False)))
    assert not (d / "confusion.png").exists() and (d / "metrics.csv").exists()


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


def test_the_compare_figure_colours_each_run_alike_and_names_it_by_what_differs(tiny_cfg):
    from matplotlib.colors import to_hex

    from resnetf.compare import compare_figure, compare_table

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
    table = pd.read_csv(tmp_path / "cmp.csv").set_index("run")
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


def test_every_run_folder_draws_its_own_curves(tiny_cfg):
    d = run_dir_of(run(tiny_cfg.replace(analysis=False, val_size=20)))
    with Image.open(d / "curves.png") as image:
        assert image.size == (1500, 450)
        pixels = np.asarray(image.convert("L"))
    # three panels with lines in them, not three empty frames: plenty of non-white pixels
    assert (pixels < 200).mean() > 0.02


def test_gradcam_maps_show_where_the_class_evidence_is():
    import torch

    from resnetf.analysis import gradcam_maps
    from resnetf.models import ResNet9

    torch.manual_seed(0)
    net = ResNet9(width=0.25).eval()
    # an image with a bright square in one corner: the maps must not be blank or uniform
    x = torch.zeros(2, 3, 32, 32)
    x[:, :, :12, :12] = 3.0
    maps = gradcam_maps(net, x, [0, 1], net.cam_layer)
    assert maps.shape == (2, 32, 32)
    assert 0 <= maps.min() and maps.max() <= 1
    assert all(m.max() - m.min() > 0.5 for m in maps), "a blank or flat map"
    other = gradcam_maps(net, x[:1], [5], net.cam_layer)
    assert not np.allclose(other[0], maps[0])  # another class, another map
