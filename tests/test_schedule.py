import numpy as np
import pytest
import torch

from conftest import scheduler_lrs
from resnetf.config import Config
from resnetf.optim import make_optimizer, make_scheduler


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
