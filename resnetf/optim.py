"""How a run optimises: its step count, the SGD optimizer (plain or in airbench's decoupled form),
the One Cycle schedule and its checks, the numeric precision, and lookahead weight averaging.

`train`, `tune`, `bench` and `lr_range` all take these from here, so a run, a study's range
check, a benchmark's compute count and an LR range test agree on every number.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .config import Config, ConfigError

# ===== steps and epochs ==========================================================================


def total_steps(cfg: Config, steps_per_epoch: int) -> int:
    """The run's optimizer steps: a fractional epoch count trains the last epoch partly."""
    return max(1, round(cfg.epochs * steps_per_epoch))


def n_epochs(cfg: Config) -> int:
    """Epochs the loop enters, the partial last one included."""
    return math.ceil(cfg.epochs - 1e-9)


# ===== the optimizer =============================================================================


def sgd_hyperparameters(cfg: Config) -> tuple[float, float]:
    """(peak lr, decay step) for torch's SGD on the mean loss of a batch. The decay step is what
    one step at the peak lr takes off a weight w: lr * weight_decay * w. In the decoupled form
    both come per 1024 examples of a summed loss with momentum's 1/(1 - momentum) gain taken
    out (airbench94's hyperparameters)."""
    if not cfg.decoupled:
        return cfg.max_lr, cfg.max_lr * cfg.weight_decay
    per_step = cfg.batch_size / (1024 * (1 + 1 / (1 - cfg.momentum)))
    return cfg.max_lr * per_step, cfg.weight_decay * per_step


def make_optimizer(model: nn.Module, cfg: Config, loss_scale: float = 1.0) -> torch.optim.SGD:
    """Nesterov SGD over the parameters the net trains (`frozen_parameters()` left out) in two
    groups: everything else, then BatchNorm biases at bn_bias_lr times the lr. Each group's
    weight_decay is set so that its decay step at the peak lr is the same. A loss multiplied by
    `loss_scale` (half precision sums the batch's losses) gets lr / loss_scale: the same steps."""
    bn_biases = {
        id(m.bias)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None
    }
    frozen = {id(p) for p in frozen_parameters(model)}
    # a parameter that trains in some epochs only is in: SGD skips one without a gradient
    trained = [p for p in model.parameters() if id(p) not in frozen]
    lr, decay_step = sgd_hyperparameters(cfg)
    lr = lr / loss_scale
    groups = []
    for params, group_lr in (
        ([p for p in trained if id(p) not in bn_biases], lr),
        ([p for p in trained if id(p) in bn_biases], lr * cfg.bn_bias_lr),
    ):
        if params:  # OneCycleLR sets each group's lr from its max_lr before the first step
            groups.append(
                {
                    "params": params,
                    "lr": group_lr,
                    "max_lr": group_lr,
                    "weight_decay": decay_step / group_lr,
                }
            )
    return torch.optim.SGD(
        groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, foreach=True
    )


def frozen_parameters(model: nn.Module) -> list:
    """What the net never trains: its own answer where it has one (models.Net), else the
    parameters that do not require gradients."""
    if hasattr(model, "frozen_parameters"):
        return list(model.frozen_parameters())
    return [p for p in model.parameters() if not p.requires_grad]


# ===== the schedule ==============================================================================


def check_schedule(cfg: Config, total_steps: int) -> None:
    """OneCycleLR divides by the length of each phase: a phase under one step would crash it."""
    p = cfg.pct_start * total_steps
    ends = [p - 1, 2 * p - 2, total_steps - 1] if cfg.three_phase else [p - 1, total_steps - 1]
    if any(b - a <= 0 for a, b in zip([0.0] + ends, ends)):
        raise ConfigError(
            f"pct_start: {cfg.pct_start} of {total_steps} steps leaves a One Cycle "
            f"phase with no step; train longer or change pct_start"
        )


def make_scheduler(optimizer, cfg: Config, steps_per_epoch: int):
    total = total_steps(cfg, steps_per_epoch)
    check_schedule(cfg, total)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[g["max_lr"] for g in optimizer.param_groups],
        total_steps=total,
        pct_start=cfg.pct_start,
        anneal_strategy=cfg.anneal_strategy,
        div_factor=cfg.div_factor,
        final_div_factor=cfg.final_div_factor,
        three_phase=cfg.three_phase,
        cycle_momentum=cfg.cycle_momentum,
    )


# ===== precision =================================================================================


@dataclass
class Precision:
    """How the net computes. autocast: bf16/fp16 matmuls over fp32 weights (`scaler` for fp16);
    half: the weights and activations themselves fp16, BatchNorm fp32, the batch's losses
    summed (`loss_scale` = batch size) so that small gradients stay representable without a
    GradScaler, as airbench94 runs."""

    autocast: Any = None
    scaler: torch.amp.GradScaler | None = None
    half: bool = False
    loss_scale: float = 1.0

    def __post_init__(self):
        self.autocast = self.autocast or nullcontext()

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.float16 if self.half else torch.float32

    def prepare(self, model: nn.Module) -> nn.Module:
        """The net in this precision: with half, fp16 but for BatchNorm (its statistics and
        affine parameters stay fp32, which torch's batch norm accepts beside fp16 inputs)."""
        if self.half:
            model.half()
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.float()
        return model


def precision(cfg: Config, device: torch.device, batch_size: int) -> Precision:
    """The precision of Config.amp_dtype on `device`."""
    if cfg.amp and cfg.amp_dtype == "half":
        return Precision(half=True, loss_scale=float(batch_size))
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    dtype = amp_dtype(cfg.amp, cfg.amp_dtype, device.type, capability)
    if dtype is None:
        return Precision()
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    return Precision(torch.autocast(device.type, dtype=dtype), scaler)


def amp_dtype(amp: bool, choice: str, device_type: str, capability=None) -> torch.dtype | None:
    """The autocast type. auto: bf16 from compute capability 8.0 (Ampere) on, where tensor cores
    run it natively, fp16 below (T4, V100), nothing on the CPU; bf16/fp16: as asked; half: no
    autocast (the weights are fp16 themselves)."""
    if not amp or choice == "half" or (choice == "auto" and device_type != "cuda"):
        return None
    if choice == "auto":
        return torch.bfloat16 if tuple(capability) >= (8, 0) else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[choice]


def sync(device: torch.device) -> None:
    """Wait for the device: timings end here."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ===== lookahead =================================================================================


class Lookahead:
    """Lookahead weight averaging, as airbench94 does it: every few steps the weights are pulled
    to a running average of themselves and the average is copied back into the net.

    The pull grows over the run, decay = base**every * (step / total)**3: early on the average
    follows the weights (decay ~ 0), late it damps the last steps' noise (decay -> 0.95**5 ~
    0.77). At the end the weights become the average (`apply_average`). BatchNorm running statistics
    are averaged with the weights, so the net stays consistent."""

    def __init__(self, model: nn.Module, total_steps: int, base: float = 0.95, every: int = 5):
        self.total_steps, self.base, self.every = total_steps, base, every
        self.average = {
            k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()
        }

    def decay(self, step: int) -> float:
        return self.base**self.every * (step / self.total_steps) ** 3

    @torch.no_grad()
    def step(self, model: nn.Module, step: int) -> None:
        """Call after optimizer step number `step` (1-based); acts on every `every`-th."""
        if step % self.every == 0:
            self._pull(model, self.decay(step))

    @torch.no_grad()
    def apply_average(self, model: nn.Module) -> None:
        """The weights become the average (decay 1: the average itself does not move)."""
        self._pull(model, 1.0)

    def _pull(self, model: nn.Module, decay: float) -> None:
        for name, value in model.state_dict().items():
            if name in self.average:
                self.average[name].lerp_(value, 1 - decay)
                value.copy_(self.average[name])

    def state_dict(self) -> dict:
        return dict(self.average)

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            self.average[name].copy_(value)
