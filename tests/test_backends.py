"""The gpu backend's loader, the fast-path options (EMA, torch.compile) and the benchmark."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, run_dir_of
from resnetf import models, run
from resnetf.data import CifarDataset, DeviceLoader
from resnetf.train import compile_model

CPU = torch.device("cpu")


def test_device_loader_shuffles_every_image_once_per_epoch():
    images = np.arange(103)[:, None, None, None].repeat(32, 1).repeat(32, 2).repeat(3, 3)
    loader = DeviceLoader(images.astype(np.uint8), np.arange(103), 10, True, CPU, seed=0)
    assert len(loader) == 10  # the partial batch of 3 is dropped, as in training
    epochs = [torch.cat([y for _, y in loader]) for _ in range(2)]
    for labels in epochs:
        assert len(labels) == 100 and len(set(labels.tolist())) == 100
    assert not torch.equal(epochs[0], epochs[1])
    x, y = next(iter(loader))
    assert x.dtype == torch.uint8 and x.shape == (10, 3, 32, 32)
    assert torch.equal(x[:, 0, 0, 0].long(), y)  # images travel with their labels
    again = DeviceLoader(images.astype(np.uint8), np.arange(103), 10, True, CPU, seed=0)
    assert torch.equal(torch.cat([y for _, y in again]), epochs[0])


def test_dataset_item_and_batch_fetch_agree():
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    ds = CifarDataset(images, np.arange(6))
    x, y = ds.__getitems__([4, 1])
    assert torch.equal(x[0], ds[4][0]) and torch.equal(x[1], ds[1][0]) and y.tolist() == [4, 1]
    assert ds[4][0].shape == (3, 32, 32) and torch.equal(
        ds[4][0].permute(1, 2, 0), torch.from_numpy(images[4])
    )


@pytest.mark.parametrize("backend", ["albumentations", "gpu"])
def test_both_backends_train_and_are_reproducible(tiny_cfg, backend):
    cfg = tiny_cfg.replace(backend=backend, epochs=3, analysis=False)
    a, b = run(cfg), run(cfg)
    ma, mb = (pd.read_csv(run_dir_of(s) / "metrics.csv") for s in (a, b))
    cols = ["train_loss", "train_acc", "test_loss", "test_acc"]
    pd.testing.assert_frame_equal(ma[cols], mb[cols])
    # it learned: the weights moved away from their seeded start and the loss went down
    torch.manual_seed(cfg.seed)
    start = models.build(cfg).state_dict()
    trained = torch.load(run_dir_of(a) / "model.pt")["state_dict"]
    assert not torch.equal(start["fc.weight"], trained["fc.weight"])
    assert ma["train_loss"].iloc[-1] < ma["train_loss"].iloc[0]


def test_ema_weights_are_saved_and_evaluated(tiny_cfg):
    plain = run(tiny_cfg.replace(epochs=3, analysis=False))
    averaged = run(tiny_cfg.replace(epochs=3, analysis=False, ema=0.9))
    a, b = (torch.load(run_dir_of(s) / "model.pt")["state_dict"] for s in (plain, averaged))
    assert set(a) == set(b)  # the averaged net, saved as a plain net
    # same seed, same training: only the averaging can make the saved weights differ
    assert not torch.equal(a["fc.weight"], b["fc.weight"])
    ma, mb = (pd.read_csv(run_dir_of(s) / "metrics.csv") for s in (plain, averaged))
    assert ma["train_loss"].tolist() == mb["train_loss"].tolist()
    assert ma["test_loss"].tolist() != mb["test_loss"].tolist()  # evaluated on the average


def test_eval_every_skips_epochs_but_not_the_last(tiny_cfg):
    summary = run(tiny_cfg.replace(epochs=3, eval_every=0))
    metrics = pd.read_csv(run_dir_of(summary) / "metrics.csv")
    assert metrics["test_acc"].isna().tolist() == [True, True, False]


def test_compile_warm_up_leaves_the_weights_as_they_were():
    from resnetf.models import ResNet9

    model = ResNet9(width=0.0625)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compiled, _ = compile_model(
        model,
        (4, 3, 32, 32),
        [3],
        torch.nn.CrossEntropyLoss(),
        torch.autocast("cpu", enabled=False),
    )
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics too
    assert all(p.grad is None for p in model.parameters())
    x = torch.randn(3, 3, 32, 32)
    compiled.eval(), model.eval()
    torch.testing.assert_close(compiled(x), model(x))


def test_benchmark_runs_on_a_cpu_with_tiny_settings(tiny_data, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "resnetf.bench",
            "experiments/oc_24ep.py",
            "--seeds=2",
            f"--out={tmp_path}",
            "--",
            f"--data_dir={tiny_data}",
            "--epochs=2",
            "--batch_size=20",
            "--width=0.0625",
            "--workers=0",
            "--wandb_mode=disabled",
            "--no_progress",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    pipeline = pd.read_csv(tmp_path / "pipeline.csv")
    assert len(pipeline) == 3 and (pipeline["images_per_s"] > 0).all()
    seeds = pd.read_csv(tmp_path / "seeds.csv")
    assert seeds["seed"].tolist() == [0, 1]  # the warm-up run is not counted
    assert {"torch", "gpu", "test_acc", "train_seconds", "train_images_per_s"} <= set(seeds)
    assert "test accuracy" in proc.stdout


def test_albumentations_run_does_not_depend_on_the_number_of_workers(tiny_cfg):
    # each batch's augmentations are seeded by (seed, epoch, batch), and the loader is iterated
    # exactly once per epoch (a progress bar that called iter() twice once broke this)
    runs = [
        run(tiny_cfg.replace(backend="albumentations", workers=w, analysis=False)) for w in (0, 2)
    ]
    a, b = (pd.read_csv(run_dir_of(s) / "steps.csv") for s in runs)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_benchmark_reports_each_trials_overhead(tiny_data, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "resnetf.bench",
            "experiments/oc_24ep.py",
            "--seeds=0",
            "--no_pipeline",
            "--trials=2",
            f"--out={tmp_path}",
            "--",
            f"--data_dir={tiny_data}",
            "--epochs=3",
            "--batch_size=10",
            "--val_size=20",
            "--width=0.0625",
            "--workers=0",
            "--backend=gpu",
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
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert trials["trial"].tolist() == [0, 1]
    # the whole trial, as Optuna timed it, not a window inside it
    (study_table,) = (tmp_path / "runs" / "tune").glob("bench_*_trials.csv")
    np.testing.assert_allclose(trials["wall_seconds"], pd.read_csv(study_table)["duration"])
    assert (trials["wall_seconds"] > trials["train_seconds"] + trials["eval_seconds"]).all()
    np.testing.assert_allclose(
        trials["overhead_seconds"],
        trials["wall_seconds"] - trials["train_seconds"] - trials["eval_seconds"],
    )
    assert "overhead (wall minus train and evaluation)" in proc.stdout


def test_airbench_gets_the_same_data_in_its_own_layout(tiny_data, tmp_path):
    from resnetf.bench import write_airbench_data
    from resnetf.data import load_cifar10

    cifar = load_cifar10(tiny_data, download=False)
    folder = write_airbench_data(cifar, tmp_path / "cifar10")
    for split in ("train", "test"):
        saved = torch.load(folder / f"{split}.pt")
        assert saved["images"].dtype == torch.uint8 and saved["images"].shape[1:] == (32, 32, 3)
        assert np.array_equal(saved["images"].numpy(), getattr(cifar, f"{split}_images"))
        assert np.array_equal(saved["labels"].numpy(), getattr(cifar, f"{split}_labels"))
        assert saved["classes"] == list(cifar.classes)


def test_against_airbench_without_the_package_is_a_clear_error(tiny_data, tmp_path):
    try:
        import airbench  # noqa: F401

        pytest.skip("airbench is installed here")
    except ImportError:
        pass
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "resnetf.bench",
            "experiments/fast94.py",
            "--seeds=1",
            "--no_pipeline",
            "--against=airbench94",
            f"--out={tmp_path}",
            "--",
            f"--data_dir={tiny_data}",
            "--epochs=2",
            "--batch_size=20",
            "--width=0.125",
            "--wandb_mode=disabled",
            "--no_progress",
            "--no_analysis",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "needs the airbench package" in proc.stderr


def test_the_race_warms_both_up_then_interleaves_the_seeds(tiny_data, tmp_path, monkeypatch):
    # airbench needs CUDA: a stand-in package records what the race asks of it, and our side
    # runs for real on the CPU
    import types

    from resnetf import bench
    from resnetf.config import load_experiment

    calls = []
    fake = types.ModuleType("airbench")
    fake.CifarLoader = lambda *a, **k: object()
    fake.train94 = lambda loader, verbose: calls.append("theirs") or "net"
    fake.evaluate = lambda net, loader, tta_level: (
        calls.append(f"theirs eval tta{tta_level}") or 0.5
    )
    monkeypatch.setitem(sys.modules, "airbench", fake)
    monkeypatch.setattr(bench, "pick_device", lambda name: types.SimpleNamespace(type="cuda"))
    monkeypatch.setattr(bench, "sync", lambda device: None)
    real_ours = bench._ours

    def ours(cfg, cifar, device, job_type="train"):
        calls.append(f"ours {cfg.seed}")
        return real_ours(cfg, cifar, torch.device("cpu"), job_type)

    monkeypatch.setattr(bench, "_ours", ours)
    cfg = load_experiment(REPO / "experiments" / "fast94.py").replace(
        data_dir=str(tiny_data), epochs=2, batch_size=20, width=0.125, device="cpu", workers=0
    )
    race = bench.race_airbench94(cfg, 2, tmp_path)
    assert calls == [
        "ours 10000",
        "theirs",
        "theirs eval tta2",  # warm-ups, evaluation included
        "ours 0",
        "theirs",
        "theirs eval tta2",
        "ours 1",
        "theirs",
        "theirs eval tta2",
    ]
    assert race["side"].tolist() == ["ours", "airbench94"] * 2
    ours_rows = race[race["side"] == "ours"]
    assert (ours_rows["wall_seconds"] > ours_rows["timer_seconds"]).all()  # build, whitening too
    assert ours_rows["test_acc"].between(0, 1).all()
    assert not list((tmp_path / "runs").glob("*/checkpoint.pt"))  # no work beyond the race's
