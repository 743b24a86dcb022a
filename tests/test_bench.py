"""resnetf.bench: the smoke run, the trials' overhead, the race against airbench94."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO

CPU = torch.device("cpu")


@pytest.mark.slow
def test_benchmark_runs_on_a_cpu_with_tiny_settings(tiny_data, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "resnetf.bench",
            "experiments/oc_24ep.py",
            "--seeds=2",
            "--target_acc=0.01",
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
    assert "vs target 1.00%: one-sided t-test" in proc.stdout


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_the_fast_recipes_count_their_compute_as_the_readme_says():
    from resnetf.config import load_experiment
    from resnetf.flops import flops

    fast94, muon = (
        flops(load_experiment(REPO / "experiments" / f"{name}.py"))
        for name in ("fast94", "fast94_muon")
    )
    assert fast94["total_pflop"] == pytest.approx(0.358, abs=5e-4)
    assert muon["total_pflop"] == pytest.approx(0.297, abs=5e-4) and muon["total_pflop"] <= 0.30
    assert muon["train_images"] == 400_000  # 8 epochs of 25 batches of 2000
    cfg = load_experiment(REPO / "experiments" / "fast94_muon.py")
    quarter = flops(cfg.replace(tta_fraction=0.25))
    plain = flops(cfg.replace(tta="none"))
    # a plain pass over every image, then the 6 views for a quarter of them
    expected = plain["eval_gflop_per_image"] * (1 + 0.25 * 6)
    assert quarter["eval_gflop_per_image"] == pytest.approx(expected, rel=1e-6)


def test_bench_flops_prints_the_speedruns_0_272_pflop(capsys):
    from resnetf.bench import main

    main([str(REPO / "experiments" / "fast94_speedrun.py"), "--flops"])
    out = capsys.readouterr().out
    assert "376,320 images" in out and "total 0.272 PFLOP" in out


@pytest.mark.slow
def test_bench_ops_counts_each_variant_through_the_runs_own_steps(tiny_data, tmp_path, capsys):
    # counts are printed, never asserted: the test holds the path (eager, Muon one parameter at
    # a time, compiled or the reason it could not compile) and the CSV
    from resnetf.bench import main

    flags = [f"--data_dir={tiny_data}", "--width=0.0625", "--batch_size=10", "--device=cpu"]
    main(
        [
            str(REPO / "experiments" / "fast94_speedrun.py"),
            "--ops",
            "--out",
            str(tmp_path),
            "--",
            *flags,
        ]
    )
    table = pd.read_csv(tmp_path / "ops.csv")
    assert table["variant"].tolist() == ["eager", "eager, Muon per parameter", "compiled"]
    eager = table.iloc[0]
    assert eager["aten_ops_per_step"] > eager["top_level_aten_ops_per_step"] > 0
    assert eager["steps"] == 6 and eager["host_syncs_per_step"] >= 0
    compiled = table.iloc[2]
    assert compiled["compiled"] == True or isinstance(compiled.get("error"), str)  # noqa: E712
    assert "per training step" in capsys.readouterr().out


def test_the_op_counter_on_a_sequence_whose_counts_are_known():
    # bench --ops prints what event_counts says: on ops written out here the answer is known
    from torch.profiler import profile, record_function

    from resnetf.debug import event_counts

    x = torch.ones(3)
    with profile() as prof:
        y = x + x  # top level: add
        y.sum().item()  # sum, item (its _local_scalar_dense inside: a read-back, a sync)
        with record_function("enumerate(DataLoader)#__next__"):
            x.sum().item()  # sum, item: the loader's own CPU read, not a wait for a device
    counts = event_counts(prof.events())
    assert counts["top_level_aten_ops"] == 5
    assert counts["aten_ops"] > 5  # the inner calls (_local_scalar_dense, fill_, ...) too
    assert counts["host_syncs"] == 1 and counts["kernel_launches"] == 0


def test_the_poll_benchmark_times_both_polls(capsys):
    from resnetf import bench_poll

    bench_poll.main(["--folders", "5", "--runs", "2", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "2 runs beside 5 other run folders" in out and "own claim records" in out


@pytest.mark.slow
def test_the_study_benchmark_runs_its_three_studies(tiny_data, tmp_path, capsys):
    from resnetf import bench_study

    flags = [
        f"--data_dir={tiny_data}",
        "--width=0.25",
        "--epochs=1.5",
        "--batch_size=10",
        "--val_size=20",
        "--device=cpu",
        "--wandb_mode=disabled",
        "--workers=0",
        "--no_progress",
    ]
    argv = [str(REPO / "experiments" / "fast94.py"), "--trials=2", "--trial_seeds=2"]
    bench_study.main([*argv, "--retrain_seeds=2", f"--out={tmp_path}", "--", *flags])
    out = capsys.readouterr().out
    assert "pruning over seeds trained" in out and "the game's floor" in out
    table = pd.read_csv(tmp_path / "bench_study.csv")
    assert list(table["study"]) == ["unpruned", "pruned", "game"]
    # the game alone, at a floor given
    game = [*argv, "--retrain_seeds=2", f"--out={tmp_path / 'game'}", "--only_game"]
    bench_study.main([*game, "--floor=0.05", "--", *flags])
    assert "the game's floor 5.00%" in capsys.readouterr().out
    assert list(pd.read_csv(tmp_path / "game" / "bench_study_game.csv")["study"]) == ["game"]


def test_the_damage_benchmark_counts_its_cases(tmp_path, capsys):
    from resnetf import bench_damage

    rows = bench_damage.main(["--out", str(tmp_path), "--only", "5"])
    assert [(r["class"], r["got"]) for r in rows] == [(5, "works")]
    assert "class 5 (an experiment that imports its neighbour): 1 of 1" in capsys.readouterr().out
