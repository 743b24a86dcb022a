"""The fast recipe's parts: the whitening stem, the decoupled hyperparameters, lookahead, the
alternating flip and translations, the test-time augmentation levels, mixed precision, fractional
epochs, and the compute count."""

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, run_dir_of, scheduler_lrs
from resnetf import models, run
from resnetf.batch_augment import BatchAugment
from resnetf.config import Config, load_experiment
from resnetf.data import DeviceLoader
from resnetf.train import Context

CPU = torch.device("cpu")
FAST94 = load_experiment(REPO / "experiments" / "fast94.py")


def _correlated_images(n=400, seed=0):
    """Smooth, colour-correlated images: neighbouring pixels and channels far from white."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.avg_pool2d(torch.randn(n, 1, 36, 36, generator=g), 5, 1)
    return base.repeat(1, 3, 1, 1) + 0.3 * torch.randn(n, 3, 32, 32, generator=g)


def test_the_whitening_stem_outputs_uncorrelated_unit_variance_channels():
    net = models.WhitenedConvNet(width=0.125)
    images = _correlated_images()
    net.init_from_data(images)
    with torch.no_grad():
        out = net.stem(images) - net.stem.bias[None, :, None, None]
    channels = out.permute(1, 0, 2, 3).reshape(24, -1)
    cov = torch.cov(channels[:12])
    torch.testing.assert_close(cov, torch.eye(12), atol=0.05, rtol=0)  # white: ~identity
    torch.testing.assert_close(channels[12:], -channels[:12])  # each filter with both signs
    raw = torch.corrcoef(
        images.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).T
    )
    assert (
        raw[~torch.eye(12, dtype=torch.bool)].min() > 0.15
    )  # every pair of patch pixels correlated
    assert not net.stem.weight.requires_grad  # frozen


def test_whitened_convnet_shape_and_parts():
    net = models.build(Config(model="whitened_convnet"))
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    convs = [m for m in net.groups.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 256, 256, 256, 256]
    assert all(c.bias is None for c in convs) and net.fc.bias is None
    # identity on the first in-channels: a fresh conv passes its input's channels through
    x = torch.randn(1, 64, 8, 8)
    torch.testing.assert_close(convs[1](x)[:, :64], x)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(not b.weight.requires_grad and b.bias.requires_grad for b in bns)
    assert all(b.momentum == 0.4 and b.eps == 1e-12 for b in bns)
    assert abs(models.count_parameters(net) - 1.97e6) < 0.05e6  # airbench94's ~2M
    assert torch.count_nonzero(net.stem.bias) == 0  # the whitened patches as they are, at first


def test_alternating_flip_flips_each_image_one_way_then_the_other():
    images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    loader = DeviceLoader(images, np.arange(64), 64, False, CPU, seed=1, alternating_flip=True)
    seen = {}
    for epoch in range(3):
        loader.set_epoch(epoch)
        x, y = next(iter(loader))
        original = torch.from_numpy(images).permute(0, 3, 1, 2)[y]
        seen[epoch] = torch.tensor([torch.equal(a, b.flip(2)) for a, b in zip(x, original)])
        assert all(torch.equal(a, b) or torch.equal(a, b.flip(2)) for a, b in zip(x, original))
    assert 16 <= int(seen[0].sum()) <= 48  # a random half in epoch 0
    assert torch.equal(seen[1], ~seen[0]) and torch.equal(seen[2], seen[0])


def _marked_cifar(n=200):
    """Images that say who they are and which way they face, whatever the 2-px translation:
    channel 0 rises from left to right, channels 1 and 2 hold the image's index."""
    from resnetf.data import Cifar10

    images = np.zeros((n, 32, 32, 3), np.uint8)
    images[..., 0] = np.arange(32, dtype=np.uint8) * 8
    images[..., 1] = (np.arange(n) % 256)[:, None, None]
    images[..., 2] = (np.arange(n) // 256)[:, None, None]
    labels = np.arange(n) % 10
    return Cifar10(images, labels, images[:20], labels[:20], tuple(map(str, range(10))))


class _Seen(torch.nn.Module):
    """Wraps the net and notes, for every image a training step feeds it, (index, mirrored)."""

    def __init__(self, net, mean, std):
        super().__init__()
        self.net, self.mean, self.std, self.seen = net, mean, std, []

    def forward(self, x):
        pixels = (x.detach().float() * self.std + self.mean).round()
        index = pixels[:, 1, 0, 0] + 256 * pixels[:, 2, 0, 0]
        mirrored = pixels[:, 0, :, -1].mean(1) < pixels[:, 0, :, 0].mean(1)
        self.seen += zip(index.long().tolist(), mirrored.tolist())
        return self.net(x)


@pytest.mark.slow
def test_the_net_sees_each_image_mirrored_the_other_way_from_its_previous_epoch(tmp_path):
    # the run's own path: build, the per-epoch calls fit makes, the train loader and the batch
    # preparation of train_epoch, on the fast recipe
    from resnetf import train

    cfg = FAST94.replace(
        width=0.125,
        batch_size=20,
        epochs=4,
        device="cpu",
        workers=0,
        runs_dir=str(tmp_path),
        wandb_mode="disabled",
        progress=False,
    )
    setup = train.build(cfg, _marked_cifar())
    finish = setup.train_prep
    seen = _Seen(setup.net, finish.mean, finish.std)
    setup.net = seen
    mirrored = []
    for epoch in range(4):
        train.begin_epoch(setup, epoch)
        seen.seen = []
        train.train_epoch(setup, epoch)
        assert sorted(i for i, _ in seen.seen) == list(range(200))  # every image, once
        mirrored.append(torch.tensor([m for _, m in sorted(seen.seen)]))
    assert 60 <= int(mirrored[0].sum()) <= 140  # epoch 0: each image at random
    for before, after in zip(mirrored, mirrored[1:]):
        assert torch.equal(after, ~before)  # then always the other way


def test_translation_by_up_to_two_pixels_reaches_every_offset():
    image = torch.arange(3 * 32 * 32, dtype=torch.float32).reshape(1, 3, 32, 32) % 251
    batch = image.repeat(500, 1, 1, 1).to(torch.uint8)
    cfg = Config(pad=2, flip=False, cutout=0, normalize=False)
    out = BatchAugment(cfg, CPU, train=True, geometric=True)(batch)
    padded = torch.nn.functional.pad(image, (2, 2, 2, 2), mode="reflect")
    offsets = set()
    for o in out:
        match = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(o, padded[0, :, dy : dy + 32, dx : dx + 32])
        ]
        assert len(match) == 1
        offsets.add(match[0])
    assert offsets == {(dy, dx) for dy in range(5) for dx in range(5)}  # -2..2 both ways


def test_each_test_time_augmentation_level():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(models.logits(net, x, "none"), net(x))
    mirrored = (net(x) + net(x.flip(3))) / 2
    torch.testing.assert_close(models.logits(net, x, "flip"), mirrored)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    views = [padded[:, :, :32, :32], padded[:, :, 2:, 2:]]
    shifted = sum((net(v) + net(v.flip(3))) / 2 for v in views) / 2
    torch.testing.assert_close(models.logits(net, x, "flip_translate"), (mirrored + shifted) / 2)


@pytest.mark.slow
def test_fp16_trains_through_a_grad_scaler(tiny_cfg):
    # torch runs fp16 autocast and the GradScaler on the CPU too: the path a T4 takes
    summary = run(tiny_cfg.replace(amp_dtype="fp16", epochs=3, analysis=False))
    d = run_dir_of(summary)
    saved = torch.load(d / "checkpoint.pt", weights_only=False)
    scaler = saved["optimisation"]["scaler"]  # the Stepper holds it
    assert scaler is not None and scaler["scale"] > 0
    losses = pd.read_csv(d / "metrics.csv")["train_loss"]
    assert np.isfinite(losses).all() and losses.iloc[-1] < losses.iloc[0]


@pytest.mark.slow
def test_fractional_epochs_train_a_step_budget(tiny_cfg):
    cfg = tiny_cfg.replace(epochs=2.6, analysis=False)  # 5 steps an epoch: 13 steps
    d = run_dir_of(run(cfg))
    steps = pd.read_csv(d / "steps.csv")
    assert steps["step"].tolist() == list(range(13))
    assert pd.read_csv(d / "metrics.csv")["epoch"].tolist() == [1, 2, 3]
    assert steps["lr"].tolist() == pytest.approx(scheduler_lrs(cfg, 5))


def test_the_fast_recipe_trains_with_its_stem_bias_frozen_after_its_epochs(tiny_cfg, tmp_path):
    cfg = FAST94.replace(
        **{
            k: getattr(tiny_cfg, k)
            for k in ("data_dir", "runs_dir", "workers", "device", "wandb_mode", "progress")
        },
        width=0.125,
        batch_size=20,
        epochs=3,
        stem_bias_epochs=1,
        analysis=False,
        eval_every=1,
    )
    copies = {}

    def keep(tracker):
        copies["dir"] = tracker.run_dir

    def after(metrics):  # the checkpoint of epoch 1, before the bias froze
        shutil.copy(copies["dir"] / "checkpoint.pt", tmp_path / f"epoch{metrics['epoch']}.pt")

    summary = run(cfg, Context(on_start=keep, on_epoch=after))
    first = torch.load(tmp_path / "epoch1.pt", weights_only=False)["model"]
    final = torch.load(run_dir_of(summary) / "model.pt")["state_dict"]
    assert torch.equal(first["stem.bias"], final["stem.bias"])  # frozen after epoch 1
    assert torch.equal(first["stem.weight"], final["stem.weight"])  # never trained
    assert not torch.equal(first["fc.weight"], final["fc.weight"])  # the rest trains on
    assert summary["test_images"] == 50 and summary["final_test_acc"] is not None


@pytest.mark.slow
def test_flops_of_the_fast_recipe_are_within_airbench94s_budget():
    proc = subprocess.run(
        [sys.executable, "-m", "resnetf.bench", "experiments/fast94.py", "--flops"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    total = float(proc.stdout.split("total ")[1].split(" PFLOP")[0])
    assert 0.30 <= total <= 0.37  # airbench94: 0.365
    from resnetf.flops import flops

    resnet9 = flops(load_experiment(REPO / "experiments" / "oc_24ep.py"))
    assert resnet9["train_gflop_per_image"] == pytest.approx(2.27, abs=0.01)


@pytest.mark.slow
def test_half_precision_runs_the_net_in_fp16_with_batchnorm_fp32(tiny_data, tmp_path):
    from resnetf import train

    cfg = FAST94.replace(
        width=0.125,
        batch_size=20,
        epochs=3,
        device="cpu",
        workers=0,
        data_dir=str(tiny_data),
        runs_dir=str(tmp_path),
        wandb_mode="disabled",
        progress=False,
        analysis=False,
        amp_dtype="half",
        eval_every=1,
    )
    setup = train.build(cfg)
    bns = [m for m in setup.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(
        t.dtype == torch.float32
        for b in bns
        for t in (*b.parameters(), *b.buffers())
        if t.is_floating_point()
    )
    others = [
        p
        for n, p in setup.model.named_parameters()
        if not any(p is q for b in bns for q in b.parameters())
    ]
    assert others and all(p.dtype == torch.float16 for p in others)
    x, _ = next(iter(setup.train_loader))
    assert setup.train_prep(x).dtype == torch.float16 and setup.scaler is None
    # the batch's losses are summed, so SGD's lr is the fp32 run's over the batch size
    fp32 = train.build(cfg.replace(amp_dtype="auto"))
    for half_group, fp32_group in zip(setup.stepper.param_groups, fp32.stepper.param_groups):
        assert half_group["lr"] * 20 == pytest.approx(fp32_group["lr"])
        assert half_group["lr"] * half_group["weight_decay"] == pytest.approx(
            fp32_group["lr"] * fp32_group["weight_decay"]
        )
    summary = run(cfg)
    d = run_dir_of(summary)
    steps = pd.read_csv(d / "steps.csv")
    assert steps["lr"].tolist() == pytest.approx(scheduler_lrs(cfg, 5))  # logged as fp32's
    losses = pd.read_csv(d / "metrics.csv")["train_loss"]
    assert np.isfinite(losses).all() and losses.iloc[-1] < losses.iloc[0]
    saved = torch.load(d / "model.pt")["state_dict"]
    assert saved["fc.weight"].dtype == torch.float16 and saved["stem.bias"].dtype == torch.float16
