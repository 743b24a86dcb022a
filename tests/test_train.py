import json
import math
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import REPO, read_wandb_records, run_dir_of
from resnetf import Config, analysis, models, run
from resnetf.batch_augment import BatchAugment
from resnetf.data import DeviceLoader, load_cifar10
from resnetf.train import Context, TrainingDiverged, evaluate


@pytest.mark.slow
def test_short_run_on_real_images_beats_chance(real_subset, tmp_path):
    cfg = Config(
        name="real",
        model="resnet9",
        width=0.125,
        epochs=3,
        batch_size=128,
        max_lr=0.4,
        pct_start=0.25,
        label_smoothing=0.2,
        data_dir=str(real_subset),
        runs_dir=str(tmp_path),
        workers=2,
        device="cpu",
        wandb_mode="disabled",
        progress=False,
        analysis=False,
    )
    summary = run(cfg)
    assert summary["final_test_acc"] >= 0.35  # chance is 0.10
    metrics = pd.read_csv(run_dir_of(summary) / "metrics.csv")
    assert metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0]


def test_test_accuracy_covers_the_whole_test_split(tiny_data):
    # a net that always answers class 0 is right on exactly the class-0 images: 5 of the 50
    # test images. Dropping the partial last batch of 16 would give 5/48 instead.
    cifar = load_cifar10(tiny_data, download=False)
    loader = DeviceLoader(cifar.test_images, cifar.test_labels, 16, False, torch.device("cpu"))
    finish = BatchAugment(Config(), torch.device("cpu"), train=False, geometric=False)
    always_zero = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10))
    torch.nn.init.zeros_(always_zero[1].weight)
    with torch.no_grad():
        always_zero[1].bias.copy_(torch.arange(10, 0, -1.0))
    _, acc = evaluate(always_zero, loader, finish, nullcontext())
    assert acc == 5 / 50


def test_schedule_too_short_for_its_phases_is_a_clear_error(tiny_cfg):
    with pytest.raises(ValueError, match="pct_start"):
        run(tiny_cfg.replace(epochs=1))  # 5 steps: a warm-up of 0.2 * 5 - 1 = 0 steps


@pytest.mark.slow
def test_validation_split_is_reported_and_taken_from_train(tiny_cfg):
    summary = run(tiny_cfg.replace(val_size=20))
    config = json.loads((run_dir_of(summary) / "config.json").read_text())
    assert (config["train_images"], config["val_images"]) == (80, 20)
    assert "val_acc" in pd.read_csv(run_dir_of(summary) / "metrics.csv")


def test_nan_loss_stops_with_a_clear_error_and_keeps_what_was_logged(tiny_cfg, monkeypatch):
    calls = {"n": 0}
    original = torch.nn.CrossEntropyLoss.forward

    def poisoned(self, input, target):
        calls["n"] += 1
        loss = original(self, input, target)
        return loss * math.nan if calls["n"] == 8 else loss  # step 3 of epoch 2 (5 per epoch)

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match=r"nan at epoch 2, step 3 of 5 \(lr"):
        run(tiny_cfg.replace(epochs=3))
    (run_dir,) = Path(tiny_cfg.runs_dir).iterdir()
    assert len(pd.read_csv(run_dir / "metrics.csv")) == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["epochs_done"] == 1


@pytest.mark.slow
def test_experiment_runs_end_to_end_from_the_command_line(tiny_data, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "experiments/seed_resnetf.py",
            f"--data_dir={tiny_data}",
            f"--runs_dir={tmp_path}",
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
    (run_dir,) = tmp_path.iterdir()
    assert run_dir.name.startswith("seed_resnetf_s0_")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["softmax_head"] and config["pad"] == 0 and config["weight_decay"] == 0
    assert "final test accuracy" in proc.stdout


@pytest.mark.slow
def test_missing_data_exits_with_a_message_not_a_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "experiments/oc_24ep.py",
            f"--data_dir={tmp_path}",
            "--no_download",
            "--wandb_mode=disabled",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "no CIFAR-10 at" in proc.stderr and "Traceback" not in proc.stderr


class _ToyNet(models.Net):
    """A net of the kind a researcher might add: no whitening, a plain `stem` whose bias should
    train every epoch, no convolution after it to look at... and no Grad-CAM layer at all."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 4, stride=4)
        self.head = torch.nn.Linear(4 * 8 * 8, 10)

    @property
    def cam_layer(self):
        return None

    def forward(self, x):
        return self.head(torch.relu(self.stem(x)).flatten(1))


@pytest.mark.slow
def test_a_new_net_without_a_stem_quirk_or_grad_cam_layer_runs_end_to_end(
    tiny_cfg, monkeypatch, capsys
):
    nets = []
    monkeypatch.setattr(models, "build", lambda cfg: nets.append(_ToyNet()) or nets[-1])
    biases = []
    summary = run(
        tiny_cfg.replace(epochs=5, gradcam_images=2),
        Context(on_epoch=lambda m: biases.append(nets[0].stem.bias.detach().clone())),
    )
    d = run_dir_of(summary)
    assert summary["status"] == "finished" and "analysis_error" not in summary
    for name in ("model.pt", "summary.json", "confusion.png", "misclassified.png"):
        assert (d / name).exists(), name
    assert not (d / "gradcam.png").exists() and "no Grad-CAM" in capsys.readouterr().out
    # its `stem` is its own business: the bias trains to the end (stem_bias_epochs, which acts
    # only on the whitened net, cannot be set on it: Config's acts rule)
    assert all(not torch.equal(a, b) for a, b in zip(biases, biases[1:]))


def test_a_run_whose_analysis_fails_keeps_its_model_summary_and_wandb_run(
    tiny_cfg, monkeypatch, capsys
):
    def broken(*args, **kwargs):
        raise RuntimeError("no figure today")

    monkeypatch.setattr(analysis, "analyze", broken)
    summary = run(tiny_cfg.replace(wandb_mode="offline"))
    d = run_dir_of(summary)
    saved = json.loads((d / "summary.json").read_text())
    assert saved["status"] == "finished" and "no figure today" in saved["analysis_error"]
    assert (d / "model.pt").exists() and (d / "curves.png").exists()
    err = capsys.readouterr().err
    assert "analysis after training failed (RuntimeError: no figure today)" in err
    (exit_record,) = read_wandb_records(d, "exit")
    assert exit_record.exit.exit_code == 0


@pytest.mark.slow
@pytest.mark.parametrize("scope, weights", [("batch", "airbench"), ("split", "uniform")])
def test_a_run_evaluates_with_partial_tta_as_its_config_says(tiny_cfg, monkeypatch, scope, weights):
    import resnetf

    seen, real = [], models.logits

    def recorded(model, inputs, tta="none", fraction=1.0, weights="airbench"):
        seen.append((tta, fraction, weights))
        return real(model, inputs, tta, fraction, weights)

    monkeypatch.setattr(models, "logits", recorded)
    cfg = tiny_cfg.replace(
        analysis=False,
        tta="flip_translate",
        tta_fraction=0.3,
        epochs=2,
        tta_scope=scope,
        tta_weights=weights,
    )
    summary = run(cfg)
    # the run's evaluation took the partial level: per batch, the fraction picked inside
    # logits(); over the split, the views of the least sure 30% asked for whole
    expected = ("flip_translate", 0.3 if scope == "batch" else 1.0, weights)
    assert expected in seen
    assert all(w == weights for level, _, w in seen if level == "flip_translate")
    if scope == "split":
        assert ("flip_translate", 0.3, weights) not in seen
    # and the saved model, predicted the same way outside the run, gives its accuracy
    net, saved_cfg = resnetf.load(summary["run_dir"])
    assert saved_cfg.tta_fraction == 0.3
    cifar = load_cifar10(cfg.data_dir, download=False)
    probs = resnetf.probabilities(net, saved_cfg, cifar.test_images)
    accuracy = (probs.argmax(1).numpy() == cifar.test_labels).mean()
    assert accuracy == pytest.approx(summary["final_test_acc"])
