"""optim.py: the One Cycle schedule, the decoupled SGD hyperparameters, lookahead, precision."""

import numpy as np
import pytest
import torch

from conftest import REPO, scheduler_lrs, stepped_lrs
from resnetf import models
from resnetf.config import Config, load_experiment
from resnetf.optim import Lookahead, amp_dtype, make_optimizer, make_scheduler, sgd_hyperparameters

FAST94 = load_experiment(REPO / "experiments" / "fast94.py")


def _lrs(cfg, steps_per_epoch):
    return np.array(scheduler_lrs(cfg, steps_per_epoch))


def test_seed_settings_give_the_course_projects_one_cycle():
    # max_lr 0.1552, pct_start 0.2, div 10, final div 100, linear, two phases; 98 steps/epoch
    cfg = Config()
    lr = _lrs(cfg, 98)
    total = 24 * 98
    warm = 0.2 * total - 1  # OneCycleLR's peak sits at this (fractional) step: 469.4
    assert len(lr) == total
    assert lr[0] == pytest.approx(0.01552)
    assert lr.argmax() == 470 and lr.max() == pytest.approx(0.1552, rel=1e-3)
    assert lr[-1] == pytest.approx(0.01552 / 100)
    # linear ramps: constant increments up to the peak, constant decrements after it
    assert np.allclose(np.diff(lr[:470]), (0.1552 - 0.01552) / warm)
    assert np.allclose(np.diff(lr[470:]), -(0.1552 - 0.0001552) / (total - 1 - warm))


def test_cos_and_momentum_cycling_follow_the_config():
    cfg = Config(anneal_strategy="cos", epochs=4, cycle_momentum=True)
    opt = make_optimizer(torch.nn.Linear(2, 2), cfg)
    sched = make_scheduler(opt, cfg, 10)
    momenta = []
    for _ in range(40):
        momenta.append(opt.param_groups[0]["momentum"])
        opt.step()
        sched.step()
    assert max(momenta) == pytest.approx(0.95) and min(momenta) == pytest.approx(0.85)
    lr = _lrs(cfg, 10)
    assert not np.allclose(np.diff(lr[:7]), np.diff(lr[:7])[0])  # curved, not linear


def test_decoupled_hyperparameters_become_sgds():
    lr, decay = sgd_hyperparameters(FAST94)
    kilostep = 1024 * (1 + 1 / (1 - 0.85))
    assert lr == pytest.approx(11.5 / kilostep * 1024) == pytest.approx(1.5)
    assert decay == pytest.approx(0.0153 * 1024 / kilostep)
    net = models.build(FAST94)
    opt = make_optimizer(net, FAST94)
    others, bn_biases = opt.param_groups
    assert bn_biases["lr"] == pytest.approx(64 * others["lr"])
    # the same absolute decay step at the peak for both groups, and no frozen parameter
    assert others["lr"] * others["weight_decay"] == pytest.approx(decay)
    assert bn_biases["lr"] * bn_biases["weight_decay"] == pytest.approx(decay)
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(net.stem.weight) not in trained and id(net.stem.bias) in trained
    # the decay step does not follow max_lr: a tuned lr leaves the regularisation as it was
    assert sgd_hyperparameters(FAST94.replace(max_lr=23.0))[1] == pytest.approx(decay)
    # a first step with a zero gradient takes the decay step off a weight, times Nesterov's
    # (1 + momentum) for a fresh momentum buffer
    w = torch.nn.Parameter(torch.ones(3))
    sgd = make_optimizer(torch.nn.Linear(1, 1), FAST94)
    sgd.param_groups[0]["params"] = [w]
    w.grad = torch.zeros(3)
    sgd.step()
    torch.testing.assert_close(w.detach(), torch.full((3,), 1 - decay * (1 + 0.85)))


def test_the_triangle_schedule_of_the_paper():
    cfg = FAST94.replace(epochs=10)
    lrs = np.array(scheduler_lrs(cfg, 48))
    peak = sgd_hyperparameters(cfg)[0]
    assert lrs[0] == pytest.approx(0.2 * peak) and lrs.max() == pytest.approx(peak, rel=5e-3)
    assert abs(lrs.argmax() - 0.23 * 480) <= 1
    assert lrs[-1] == pytest.approx(0.07 * peak, rel=1e-3)


def test_lookahead_pulls_the_weights_to_their_average_every_few_steps():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    la = Lookahead(model, total_steps=10, base=0.9, every=5)
    for step, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0], start=1):
        with torch.no_grad():
            model.weight.fill_(value)
        la.step(model, step)
    decay = 0.9**5 * (5 / 10) ** 3
    expected = decay * 0.0 + (1 - decay) * 5.0  # the average moved from 0 towards 5
    assert model.weight.item() == pytest.approx(expected)  # and was copied back
    with torch.no_grad():
        model.weight.fill_(9.0)
    la.step(model, 6)  # not a multiple of 5: nothing happens
    assert model.weight.item() == 9.0
    la.apply_average(model)  # the final sync: the weights become the average
    assert model.weight.item() == pytest.approx(expected)


def test_mixed_precision_choice():
    assert amp_dtype(True, "auto", "cuda", (9, 0)) == torch.bfloat16  # H100
    assert amp_dtype(True, "auto", "cuda", (8, 0)) == torch.bfloat16  # A100
    assert amp_dtype(True, "auto", "cuda", (7, 5)) == torch.float16  # T4 (Colab's free GPU)
    assert amp_dtype(True, "auto", "cuda", (7, 0)) == torch.float16  # V100
    assert amp_dtype(True, "auto", "cpu") is None
    assert amp_dtype(False, "bf16", "cuda", (9, 0)) is None
    assert amp_dtype(True, "fp16", "cuda", (9, 0)) == torch.float16


# --- Muon and the Stepper ----------------------------------------------------------------------


@pytest.mark.skipif(
    not hasattr(torch.optim, "Muon"), reason=f"torch {torch.__version__} has no torch.optim.Muon"
)
@pytest.mark.parametrize("shape", [(8, 16), (12, 12)])
def test_muon_takes_torchs_step_on_a_matrix(shape):
    # rescale off, no decay: the same step as torch.optim.Muon (whose lr adjustment is 1 for a
    # wide or square matrix), step for step, with Nesterov momentum
    from resnetf.optim import Muon

    torch.manual_seed(0)
    ours = torch.nn.Parameter(torch.randn(shape))
    start, theirs = ours.detach().clone(), torch.nn.Parameter(ours.detach().clone())
    a = Muon([ours], lr=0.02, momentum=0.9, nesterov=True, ns_steps=5)
    b = torch.optim.Muon([theirs], lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.0)
    for _ in range(6):
        grad = torch.randn(shape)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert (ours - start).norm() > 0.05  # it moved: six steps of lr 0.02, not none


def test_muon_steps_a_filter_bank_as_a_matrix_after_rescaling_it():
    from resnetf.optim import Muon, orthogonalize

    torch.manual_seed(0)
    bank = torch.nn.Parameter(torch.randn(6, 4, 3, 3) * 5)
    before = bank.detach().clone()
    opt = Muon([bank], lr=0.1, momentum=0.0, nesterov=False, ns_steps=3, rescale=True)
    bank.grad = torch.randn_like(bank)
    opt.step()
    rescaled = before * (6**0.5 / before.norm())  # Frobenius norm sqrt(out channels)
    expected = rescaled - 0.1 * orthogonalize(bank.grad.reshape(6, -1), 3).float().view(6, 4, 3, 3)
    torch.testing.assert_close(bank.detach(), expected, rtol=0, atol=1e-6)
    # the update is close to orthogonal: its singular values near 1 (Newton-Schulz's band)
    singular = torch.linalg.svdvals(orthogonalize(torch.randn(6, 36), 5).float())
    assert singular.min() > 0.5 and singular.max() < 1.5


def test_muon_takes_the_conv_filters_and_sgd_the_rest():
    from resnetf import models
    from resnetf.optim import Muon, make_optimizers

    cfg = FAST94.replace(optimizer="muon", width=0.25, schedule="linear_decay")
    net = models.build(cfg)
    sgd, muon = make_optimizers(net, cfg)
    assert isinstance(muon, Muon) and isinstance(sgd, torch.optim.SGD)
    filters = {id(p) for p in muon.param_groups[0]["params"]}
    expected = {id(m.weight) for m in net.groups.modules() if isinstance(m, torch.nn.Conv2d)}
    assert filters == expected  # the trainable filters; the frozen whitening stem is not one
    groups = {g["name"]: {id(p) for p in g["params"]} for g in sgd.param_groups}
    assert groups["rest"] == {id(net.fc.weight)}
    assert groups["early"] == {id(net.stem.bias)}  # decays over its own epochs
    bn_biases = {id(m.bias) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert groups["biases"] == bn_biases
    lr = {g["name"]: g["lr"] for g in sgd.param_groups}
    assert lr["biases"] == pytest.approx(lr["rest"] * cfg.bn_bias_lr) == pytest.approx(lr["early"])


def test_linear_decay_goes_to_zero_and_the_early_group_over_its_own_epochs():
    from resnetf import models
    from resnetf.optim import Precision, Stepper

    cfg = FAST94.replace(
        optimizer="muon", width=0.125, schedule="linear_decay", epochs=4, stem_bias_epochs=1
    )
    net = models.build(cfg)
    stepper = Stepper(net, cfg, steps_per_epoch=5, prec=Precision())
    peak = stepper.lrs()
    seen = stepped_lrs(stepper, 20)
    for t, lrs in enumerate(seen):
        assert lrs["rest"] == pytest.approx(peak["rest"] * (1 - t / 20))
        assert lrs["muon"] == pytest.approx(peak["muon"] * (1 - t / 20))
        assert lrs["early"] == pytest.approx(peak["early"] * max(0, 1 - t / 5))
    assert seen[0]["muon"] == cfg.muon_lr and seen[-1]["early"] == 0
