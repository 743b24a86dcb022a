"""The later public speedrun's recipe (experiments/fast94_speedrun.py) and the fields it needs:
Muon's batched step, periodic renormalisation and decay, the fractional whitening-bias epochs,
the colour jitter, SiLU, the whitening from N images, BatchNorm in fp16, and TTA over the whole
split with uniform view weights."""

import math

import pytest
import torch
from torch import nn

from conftest import REPO, stepped_lrs
from resnetf import models
from resnetf.config import Config, load_experiment
from resnetf.optim import Muon, Precision, Stepper, make_optimizers, orthogonalize

SPEEDRUN = load_experiment(REPO / "experiments" / "fast94_speedrun.py")

# --- Muon: the batched step, the periodic renormalisation, the decay ---------------------------


def _banks(seed=0):
    # filter banks of different shapes, one of them tall as a matrix (out > in x kh x kw), and a
    # plain matrix: the stack must pad and orient each
    torch.manual_seed(seed)
    shapes = [(8, 3, 3, 3), (16, 8, 3, 3), (16, 16, 3, 3), (40, 2, 2, 2), (12, 20)]
    return [nn.Parameter(torch.randn(s)) for s in shapes]


@pytest.mark.parametrize("nesterov", [True, False])
def test_the_batched_muon_step_is_the_per_parameter_step(nesterov):
    each, batched = _banks(), _banks()
    options = dict(
        lr=0.05,
        momentum=0.655,
        nesterov=nesterov,
        ns_steps=3,
        rescale=True,
        weight_decay=0.02,
        rescale_interval=2,
        rescale_growth=3,
        total_steps=8,
        coefficients=(3.4576, -4.7391, 2.0843),
        ns_dtype="fp32",
    )
    a = Muon(each, batched=False, **options)
    b = Muon(batched, batched=True, **options)
    start = [p.detach().clone() for p in each]
    for _ in range(8):
        for p, q in zip(each, batched):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        a.step()
        b.step()
        for p, q in zip(each, batched):
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    assert all((p - s).norm() > 0.05 for p, s in zip(each, start))  # every bank moved


def test_orthogonalizing_a_stack_is_each_matrix_alone():
    from resnetf.optim import orthogonalize_stacked

    torch.manual_seed(0)
    mats = [torch.randn(8, 27), torch.randn(16, 144), torch.randn(40, 8)]
    stacked = orthogonalize_stacked(mats, 5, dtype=torch.float32)
    for m, s in zip(mats, stacked):
        assert s.shape == m.shape
        torch.testing.assert_close(s, orthogonalize(m, 5, dtype=torch.float32), rtol=0, atol=2e-6)


def test_the_periodic_renormalisation_fires_on_the_speedruns_37_steps_of_245():
    # lr 0, no decay: a bank changes only when it is renormalised; it is scaled off its norm
    # before every step, so each renormalisation shows as a norm of sqrt(out) again
    bank = nn.Parameter(torch.randn(6, 4, 3, 3))
    opt = Muon([bank], lr=0.0, momentum=0.5, ns_steps=1, rescale=True)
    opt.param_groups[0].update(rescale_interval=2, rescale_growth=15, total_steps=245)
    fired = []
    for step in range(1, 246):
        with torch.no_grad():
            bank.mul_(2.0)
        bank.grad = torch.randn_like(bank)
        opt.step()
        if math.isclose(bank.norm().item(), 6**0.5, rel_tol=1e-5):
            fired.append(step)
    assert len(fired) == 37
    assert fired[:9] == [2, 4, 6, 8, 10, 12, 14, 16, 19] and fired[-1] == 230
    # the rule, step by step: the gap reaches 2 + floor(15 s / 245)
    gaps = [b - a for a, b in zip([0] + fired, fired)]
    assert all(g == 2 + 15 * s // 245 for g, s in zip(gaps, fired))


@pytest.mark.parametrize("batched", [True, False])
def test_muons_weight_decay_follows_the_update(batched):
    torch.manual_seed(0)
    bank = nn.Parameter(torch.randn(6, 4, 3, 3))
    before = bank.detach().clone()
    opt = Muon([bank], lr=0.1, momentum=0.0, nesterov=False, ns_steps=3, weight_decay=0.5)
    opt.param_groups[0]["batched"] = batched
    opt.param_groups[0]["ns_dtype"] = "fp32"
    bank.grad = torch.randn_like(bank)
    opt.step()
    update = orthogonalize(bank.grad.reshape(6, -1), 3, dtype=torch.float32).view_as(bank)
    expected = (before - 0.1 * update) * (1 - 0.1 * 0.5)
    torch.testing.assert_close(bank.detach(), expected, rtol=0, atol=1e-6)


def test_a_muon_checkpoint_from_before_its_new_options_still_loads_and_steps():
    # commit c48e3f1's Muon kept lr, momentum, nesterov, ns_steps, rescale and weight_decay in
    # its groups: a run checkpointed then resumes with what that code did
    bank = nn.Parameter(torch.randn(6, 4, 3, 3))
    opt = Muon([bank], lr=0.1, momentum=0.5, ns_steps=3, rescale=True)
    bank.grad = torch.randn_like(bank)
    opt.step()
    state = opt.state_dict()
    old = ("lr", "momentum", "nesterov", "ns_steps", "rescale", "weight_decay", "params")
    state["param_groups"] = [{k: g[k] for k in old} for g in state["param_groups"]]
    resumed = Muon([bank], lr=0.1, momentum=0.5, ns_steps=3, rescale=True)
    resumed.load_state_dict(state)
    resumed.step()
    group = resumed.param_groups[0]
    assert group["rescale_interval"] == 1 and group["steps_done"] == 1 and group["batched"]
    assert bank.norm().item() == pytest.approx(6**0.5, rel=0.2)  # rescaled, then one step


def test_the_speedruns_muon_settings_reach_its_optimizer():
    net = models.build(SPEEDRUN.replace(width=0.125))
    _, muon = make_optimizers(net, SPEEDRUN, total=245)
    group = muon.param_groups[0]
    assert group["coefficients"] == (3.4576, -4.7391, 2.0843) and group["ns_dtype"] == "fp16"
    assert group["weight_decay"] == 1.6002e-3 and group["total_steps"] == 245
    assert (group["rescale_interval"], group["rescale_growth"]) == (2, 15)
    assert group["batched"] and group["lr"] == 0.205 and group["momentum"] == 0.655


# --- the recipe's numbers --------------------------------------------------------------------


def test_the_speedruns_steps_rates_and_decay_are_the_records():
    net = models.build(SPEEDRUN)
    stepper = Stepper(net, SPEEDRUN, steps_per_epoch=50_000 // 1536, prec=Precision())
    lrs = stepped_lrs(stepper, 245)
    # in a summed loss's units (SGD's mean-loss lr / 1536): head 0.5415, biases 0.0573
    assert lrs[0]["rest"] / 1536 == pytest.approx(0.5415)
    assert lrs[0]["biases"] / 1536 == pytest.approx(0.0573)
    assert lrs[0]["muon"] == 0.205
    # the whitening bias: 0.0573 x (1 - t/7) for ceil(0.2 x 32) = 7 steps, then nothing
    early = [x["early"] / 1536 for x in lrs]
    assert early[:7] == pytest.approx([0.0573 * (1 - t / 7) for t in range(7)])
    assert max(early[7:]) == 0
    assert lrs[-1]["rest"] / 1536 == pytest.approx(0.5415 / 245)  # linearly to 0 over 245
    # coupled L2: every group's decay step at its peak lr is 1.6002e-3
    for g in stepper.optimizers[0].param_groups:
        assert g["max_lr"] * g["weight_decay"] == pytest.approx(1.6002e-3)


def test_the_speedruns_net_its_batchnorm_and_its_compute():
    from resnetf.flops import flops

    net = models.build(SPEEDRUN)
    acts = [type(m) for g in net.groups for m in g if not isinstance(m, (nn.Conv2d, nn.MaxPool2d))]
    assert acts.count(nn.SiLU) == 6 and nn.GELU not in acts  # the stem's GELU is in forward
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.momentum == 0.4434 and m.eps == 1e-12 for m in bns)
    assert net.init_images == 960
    f = flops(SPEEDRUN)
    assert f["train_images"] == 245 * 1536
    assert f["total_pflop"] == pytest.approx(0.272, abs=5e-4)
    half = Precision(half=True, loss_scale=1536, half_batchnorm=True).prepare(
        models.build(SPEEDRUN)
    )
    assert all(p.dtype == torch.float16 for p in half.parameters())
    assert all(b.dtype == torch.float16 for b in half.buffers() if b.is_floating_point())
    mixed = Precision(half=True).prepare(models.build(SPEEDRUN))
    assert all(
        p.dtype == torch.float32
        for m in mixed.modules()
        if isinstance(m, nn.BatchNorm2d)
        for p in m.parameters()
    )


def test_the_whitening_reads_as_many_images_as_asked(tiny_data):
    from resnetf import data
    from resnetf.train import build

    cfg = Config(
        model="whitened_convnet",
        width=0.125,
        data_dir=str(tiny_data),
        device="cpu",
        batch_size=10,
        backend="gpu",
        whiten_images=30,
        workers=0,
    )
    setup = build(cfg)
    first = data.split_val(setup.cifar.train_labels, 0, cfg.seed)[0][:30]
    images = torch.from_numpy(setup.cifar.train_images[first]).permute(0, 3, 1, 2)
    expected = models.build(cfg)
    expected.init_from_data(setup.eval_prep(images).float())
    assert torch.equal(setup.model.stem.weight, expected.stem.weight)
    other = build(cfg.replace(whiten_images=60)).model.stem.weight
    assert not torch.equal(other, expected.stem.weight)


def test_the_whitening_bias_trains_for_a_fraction_of_an_epoch_then_stops(tiny_data, tmp_path):
    from resnetf.train import begin_epoch, build, train_epoch

    cfg = SPEEDRUN.replace(
        width=0.125,
        batch_size=10,
        epochs=2,
        data_dir=str(tiny_data),
        device="cpu",
        progress=False,
        runs_dir=str(tmp_path),
        brightness=0.0,
        contrast=0.0,
    )
    setup = build(cfg)  # 100 images: 10 steps an epoch, ceil(0.2 x 10) = 2 of them train the bias
    biases = [setup.model.stem.bias.detach().clone()]
    setup.on_step = lambda: biases.append(setup.model.stem.bias.detach().clone())
    for epoch in range(2):
        begin_epoch(setup, epoch)
        train_epoch(setup, epoch)
    moved = [not torch.equal(a, b) for a, b in zip(biases, biases[1:])]
    assert moved[:2] == [True, True] and not any(moved[2:]) and len(moved) == 20


# --- the colour jitter ------------------------------------------------------------------------


def test_brightness_and_contrast_draw_once_per_image():
    from resnetf.batch_augment import BatchAugment

    cfg = Config(brightness=0.14, contrast=0.13, pad=0, flip=False, cutout=0, backend="gpu")
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    plain = BatchAugment(cfg, torch.device("cpu"), train=False)(x)
    out = BatchAugment(cfg, torch.device("cpu"), train=True, geometric=True)(x)
    # (x + b) c per image: c is the ratio of the centred images, b what is left of the means
    flat_in, flat_out = plain.flatten(1), out.flatten(1)
    c = (flat_out - flat_out.mean(1, keepdim=True)).norm(dim=1) / (
        flat_in - flat_in.mean(1, keepdim=True)
    ).norm(dim=1)
    b = flat_out.mean(1) / c - flat_in.mean(1)
    torch.testing.assert_close(flat_out, (flat_in + b[:, None]) * c[:, None], rtol=0, atol=1e-4)
    assert (c - 1).abs().max() <= 0.13 + 1e-5 and (c - 1).abs().max() > 0.05
    assert b.abs().max() <= 0.14 + 1e-4 and b.abs().max() > 0.05
    assert b.std() > 0.03 and c.std() > 0.03  # a draw per image, not one per batch


# --- TTA: uniform weights, the whole split -----------------------------------------------------


class _Views(nn.Module):
    """Logits that tell the views apart: the mean of each of the image's 10 first pixels."""

    def forward(self, x):
        return x[:, 0, 0, :10] * 1.0


def test_uniform_weights_average_the_six_views_alike():
    x = torch.randn(4, 3, 32, 32)
    net = _Views()
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = [padded[:, :, :32, :32], padded[:, :, 2:, 2:]]
    views = [x, x.flip(3)] + [v for s in shifted for v in (s, s.flip(3))]
    outs = [net(v) for v in views]
    uniform = models.logits(net, x, "flip_translate", weights="uniform")
    torch.testing.assert_close(uniform, sum(outs) / 6)
    airbench = models.logits(net, x, "flip_translate")
    torch.testing.assert_close(airbench, (outs[0] + outs[1]) / 4 + sum(outs[2:]) / 8)


class _Sure(nn.Module):
    """Sure of an image as its first pixel is large; the views give other logits."""

    def forward(self, x):
        top = x[:, 0, 0, 0:1] * 10
        return torch.cat([top, x[:, 0, 5, 3:12]], dim=1)


def test_split_scope_gives_the_views_to_the_least_sure_of_the_whole_split():
    from resnetf.batch_augment import BatchAugment
    from resnetf.data import DeviceLoader
    from resnetf.train import TTA, evaluate

    torch.manual_seed(0)
    # the first batch all sure, the second all unsure: per batch, half of each gets the views;
    # over the split, the second batch alone
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    images[:20, 0, 0, 0], images[20:, 0, 0, 0] = 255, 0
    labels = torch.arange(40) % 10
    device = torch.device("cpu")
    loader = DeviceLoader(images, labels, 20, False, device)
    prep = BatchAugment(Config(), device, train=False)
    net = _Sure()
    expected = models.logits(net, prep(images), "flip_translate", 0.5, "uniform").float()
    got = []
    evaluate(
        net, loader, prep, torch.no_grad(), TTA("flip_translate", 0.5, "split", "uniform"), got
    )
    torch.testing.assert_close(torch.cat(got), expected.softmax(1))
    per_batch = []
    evaluate(
        net,
        loader,
        prep,
        torch.no_grad(),
        TTA("flip_translate", 0.5, "batch", "uniform"),
        per_batch,
    )
    assert not torch.allclose(torch.cat(per_batch), torch.cat(got))
    # the split-wide pick changed only the second batch's logits
    plain = net(prep(images)).float().softmax(1)
    torch.testing.assert_close(torch.cat(got)[:20], plain[:20])
    assert not torch.allclose(torch.cat(got)[20:], plain[20:])
