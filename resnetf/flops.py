"""The FLOP counter: a recipe's compute as torch's FlopCounterMode counts it, the same on every
machine. `python -m resnetf.bench EXPERIMENT --flops` prints it; a study with the pflop objective
records it per trial (bench and tune both read it here: neither imports the other for it)."""

from __future__ import annotations

import torch

from .config import Config
from .optim import n_epochs, total_steps


def flops(cfg: Config, n_train: int = 50_000, n_test: int = 10_000) -> dict:
    """The recipe's compute, counted by torch's FlopCounterMode on the net as models.build makes
    it: forward + backward per training image (at batch size 2, then halved: FLOPs are linear in
    the batch) times the images the run trains on, plus the forward passes of every evaluation
    (test-time augmentation included) on the validation and test images."""
    from torch.utils.flop_counter import FlopCounterMode

    from . import models

    model, x = models.build(cfg), torch.randn(2, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(x), torch.zeros(2, dtype=torch.long)).backward()
    train_per_image = counter.get_total_flops() / 2
    model.eval()
    eval_per_image = {}
    for tta in ("none", cfg.tta):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            models.logits(model, x, tta)
        eval_per_image[tta] = counter.get_total_flops() / 2
    if cfg.tta_fraction < 1 and cfg.tta != "none":  # a plain pass, then TTA for the unsure
        eval_per_image = eval_per_image["none"] + cfg.tta_fraction * eval_per_image[cfg.tta]
    else:
        eval_per_image = eval_per_image[cfg.tta]
    steps = total_steps(cfg, (n_train - cfg.val_size) // cfg.batch_size)
    evaluations = (n_epochs(cfg) // cfg.eval_every if cfg.eval_every else 0) or 1
    if cfg.eval_every and n_epochs(cfg) % cfg.eval_every:
        evaluations += 1  # the last epoch is always evaluated
    evaluated = (cfg.val_size + (n_test if cfg.use_test else 0)) * evaluations
    train, evaluation = train_per_image * steps * cfg.batch_size, eval_per_image * evaluated
    return {
        "train_gflop_per_image": train_per_image / 1e9,
        "train_images": steps * cfg.batch_size,
        "eval_gflop_per_image": eval_per_image / 1e9,
        "eval_images": evaluated,
        "train_pflop": train / 1e15,
        "eval_pflop": evaluation / 1e15,
        "total_pflop": (train + evaluation) / 1e15,
    }
