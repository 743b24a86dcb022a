"""How a run optimises: its step count, the optimizers (SGD, plain or in airbench's decoupled
form; Muon for the conv filters), the schedules (One Cycle, linear decay) and their checks, the
numeric precision, lookahead and EMA weight averaging, and `Stepper`, the one object that owns
an optimisation step.

`train`, `debug`, `lr_range` and `checkpoint` step only through a Stepper; `tune`, `bench` and
`lr_range` read the step count and the hyperparameters from here, so a run, a study's range check,
a benchmark's compute count and an LR range test agree on every number. A new optimizer is a
Config value and a change in this file: `make_optimizers` builds it, the Stepper steps it.
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


def make_optimizer(
    model: nn.Module, cfg: Config, loss_scale: float = 1.0, params=None, biases=None
) -> torch.optim.SGD:
    """Nesterov SGD over the parameters the net trains (`frozen_parameters()` left out; or
    `params`) in two groups: everything else, then BatchNorm biases (or `biases`) at bn_bias_lr
    times the lr. Each group's weight_decay is set so that its decay step at the peak lr is the
    same. A loss multiplied by `loss_scale` (half precision sums the batch's losses) gets
    lr / loss_scale: the same steps. With a linear decay schedule the parameters the net trains
    early only (`early_parameters()`) get a group of their own, at the lr they would have had."""
    if biases is None:
        biases = [
            m.bias
            for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None
        ]
    bn_biases = {id(p) for p in biases}
    frozen = {id(p) for p in frozen_parameters(model)}
    # a parameter that trains in some epochs only is in: SGD skips one without a gradient
    trained = [p for p in model.parameters() if id(p) not in frozen] if params is None else params
    early = early_parameters(model, cfg)
    lr, decay_step = sgd_hyperparameters(cfg)
    lr = lr / loss_scale
    groups = []
    for name, params, group_lr in (
        ("rest", [p for p in trained if id(p) not in bn_biases | early], lr),
        ("biases", [p for p in trained if id(p) in bn_biases - early], lr * cfg.bn_bias_lr),
        ("early", [p for p in trained if id(p) in early], _early_lr(lr, cfg, bn_biases, early)),
    ):
        if params:  # OneCycleLR sets each group's lr from its max_lr before the first step
            groups.append(
                {
                    "params": params,
                    "lr": group_lr,
                    "max_lr": group_lr,
                    "weight_decay": decay_step / group_lr,
                    "name": name,
                }
            )
    return torch.optim.SGD(
        groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, foreach=True
    )


def early_parameters(model: nn.Module, cfg: Config) -> set:
    """ids of what the net trains in its first epochs only, when a linear decay gives them a
    schedule of their own (none otherwise: they stay in their group)."""
    if cfg.schedule != "linear_decay" or not hasattr(model, "early_parameters"):
        return set()
    return {id(p) for p in model.early_parameters()[0]}


def _early_lr(lr: float, cfg: Config, biases: set, early: set) -> float:
    # the lr the early parameters would have had in the group they left
    return lr * cfg.bn_bias_lr if early & biases else lr


def frozen_parameters(model: nn.Module) -> list:
    """What the net never trains: its own answer where it has one (models.Net), else the
    parameters that do not require gradients."""
    if hasattr(model, "frozen_parameters"):
        return list(model.frozen_parameters())
    return [p for p in model.parameters() if not p.requires_grad]


# ===== Muon ======================================================================================


# the quintic Newton-Schulz coefficients (a, b, c): Muon's (and torch's), and the later CIFAR-10
# speedrun's, tuned for its 3 steps
NS_COEFFICIENTS = {"muon": (3.4445, -4.7750, 2.0315), "speedrun": (3.4576, -4.7391, 2.0843)}
NS_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def orthogonalize(
    update: torch.Tensor,
    steps: int,
    eps: float = 1e-7,
    coefficients: tuple = NS_COEFFICIENTS["muon"],
    dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """An approximately orthogonal matrix with the row and column spaces of the 2-D `update`
    (U S' V^T, S' near 1), by `steps` quintic Newton-Schulz iterations in `dtype` (Muon: bf16);
    a 3-D `update` is a stack of matrices, each orthogonalised alone in one batched pass."""
    a, b, c = coefficients
    x = update.to(dtype)
    matrix = x.ndim == 2
    if matrix:  # a stack of one
        x = x[None]
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the wide side: the Gram matrix is the small one
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral <= Frobenius = 1
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    x = x.mT if tall else x
    return x[0] if matrix else x


def orthogonalize_stacked(updates: list, steps: int, **options) -> list:
    """`orthogonalize` of every matrix of `updates` at once: each turned wide, zero-padded to the
    largest rows and columns among them, one batched Newton-Schulz, cut back. Zero padding is
    exact: the padded rows and columns stay zero through every iteration and add nothing to the
    norm (on a GPU: one chain of kernels a step instead of one per filter bank)."""
    wide = [u.mT if u.size(0) > u.size(1) else u for u in updates]
    rows, cols = max(w.size(0) for w in wide), max(w.size(1) for w in wide)
    stack = wide[0].new_zeros(len(wide), rows, cols)
    for i, w in enumerate(wide):
        stack[i, : w.size(0), : w.size(1)] = w
    out = orthogonalize(stack, steps, **options)
    return [
        o[: w.size(0), : w.size(1)].mT if u.size(0) > u.size(1) else o[: w.size(0), : w.size(1)]
        for o, w, u in zip(out, wide, updates)
    ]


def rescale_due(step: int, last: int, interval: int, growth: float, total: int) -> bool:
    """Whether Muon step `step` (1-based) rescales the filter banks, `last` the step that last
    did (0 at first): when the gap reaches interval + floor(growth x step / total). Interval 1,
    growth 0: every step (airbench94_muon); 2 and 15 over 245 steps: the speedrun's 37."""
    return step - last >= interval + math.floor(growth * step / total)


class Muon(torch.optim.Optimizer):
    """Muon (Keller Jordan's MomentUm Orthogonalized by Newton-Schulz) for weights of any shape:
    each is viewed as a matrix (out, everything else), so a conv filter bank (out, in, kh, kw)
    takes a step too (torch.optim.Muon takes 2-D parameters only). Per step: momentum as an
    EMA of the gradients (Nesterov if asked); the weights rescaled to Frobenius norm sqrt(out)
    (airbench94_muon) when `rescale` and the step is due (`rescale_due`: every step, or
    periodically); weight -= lr * orthogonalize(update); then, with `weight_decay`, weight *=
    1 - lr * weight_decay (the speedrun's order). The EMA momentum equals airbench's summed
    buffer up to a scale, which the orthogonalisation normalises away; with rescale off and no
    decay, a 2-D parameter takes torch.optim.Muon's step (tests/test_optim.py checks it).

    `batched` (the default): the group's matrices orthogonalised in one zero-padded stack
    (`orthogonalize_stacked`), momentum, rescaling and decay as `_foreach` ops: the same step
    within rounding, in a few dozen ops instead of dozens per parameter; off: one at a time."""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        rescale: bool = False,
        weight_decay: float = 0.0,
        rescale_interval: int = 1,
        rescale_growth: float = 0.0,
        total_steps: int = 1,
        coefficients: tuple = NS_COEFFICIENTS["muon"],
        ns_dtype: str = "bf16",
        batched: bool = True,
    ):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps)
        defaults.update(rescale=rescale, weight_decay=weight_decay, batched=batched)
        defaults.update(rescale_interval=rescale_interval, rescale_growth=rescale_growth)
        defaults.update(total_steps=total_steps, coefficients=tuple(coefficients))
        defaults.update(ns_dtype=ns_dtype, steps_done=0, last_rescale=0)
        super().__init__(params, defaults)

    def __setstate__(self, state):
        # a checkpoint from before an option existed lacks it in its groups: the default (what
        # that code did: rescale every step, no decay, Muon's coefficients in bf16, one by one)
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            group["steps_done"] += 1  # in the group: a checkpoint keeps it
            rescale = group["rescale"] and rescale_due(
                group["steps_done"],
                group["last_rescale"],
                group["rescale_interval"],
                group["rescale_growth"],
                group["total_steps"],
            )
            if rescale:
                group["last_rescale"] = group["steps_done"]
            (self._step_batched if group["batched"] else self._step_each)(group, params, rescale)

    def _ns_options(self, group) -> dict:
        # the dtype by name: a checkpoint's groups then hold plain data only
        return dict(coefficients=group["coefficients"], dtype=NS_DTYPES[group["ns_dtype"]])

    def _step_each(self, group, params, rescale: bool) -> None:
        lr, momentum = group["lr"], group["momentum"]
        for p in params:
            buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad))
            buf.lerp_(p.grad, 1 - momentum)
            update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
            if rescale:
                p.mul_(math.sqrt(p.size(0)) / p.norm().float().clamp(min=1e-12))
            step = orthogonalize(
                update.reshape(len(update), -1), group["ns_steps"], **self._ns_options(group)
            )
            p.add_(step.view_as(p).to(p.dtype), alpha=-lr)
            if group["weight_decay"]:
                p.mul_(1 - lr * group["weight_decay"])

    def _step_batched(self, group, params, rescale: bool) -> None:
        lr, momentum = group["lr"], group["momentum"]
        grads = [p.grad for p in params]
        bufs = [
            self.state[p].setdefault("momentum_buffer", torch.zeros_like(g))
            for p, g in zip(params, grads)
        ]
        torch._foreach_lerp_(bufs, grads, 1 - momentum)
        updates = torch._foreach_lerp(grads, bufs, momentum) if group["nesterov"] else bufs
        if rescale:
            norms = torch._foreach_norm(params)
            torch._foreach_mul_(
                params,
                [math.sqrt(p.size(0)) / n.float().clamp(min=1e-12) for p, n in zip(params, norms)],
            )
        steps = orthogonalize_stacked(
            [u.reshape(len(u), -1) for u in updates], group["ns_steps"], **self._ns_options(group)
        )
        torch._foreach_add_(
            params, [s.reshape(p.shape).to(p.dtype) for s, p in zip(steps, params)], alpha=-lr
        )
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])


def make_optimizers(model: nn.Module, cfg: Config, loss_scale: float = 1.0, total: int = 1) -> list:
    """The run's optimizers, first the one whose first group is in --max_lr's units: SGD alone
    (make_optimizer), or with --optimizer=muon SGD for what is not a trainable conv filter (the
    head at max_lr; every 1-D parameter, BatchNorm and whitening biases, at bn_bias_lr times
    it) and Muon for the filters (its periodic rescaling spaced over `total` steps)."""
    if cfg.optimizer == "sgd":
        return [make_optimizer(model, cfg, loss_scale)]
    frozen = {id(p) for p in frozen_parameters(model)}
    trained = [p for p in model.parameters() if id(p) not in frozen]
    filters = [p for p in trained if p.ndim == 4]
    rest = [p for p in trained if p.ndim != 4]
    sgd = make_optimizer(model, cfg, loss_scale, rest, biases=[p for p in rest if p.ndim == 1])
    muon = Muon(
        filters,
        lr=cfg.muon_lr,
        momentum=cfg.muon_momentum,
        nesterov=cfg.nesterov,
        ns_steps=cfg.muon_ns_steps,
        rescale=cfg.muon_rescale,
        weight_decay=cfg.muon_weight_decay,
        rescale_interval=cfg.muon_rescale_interval,
        rescale_growth=cfg.muon_rescale_growth,
        total_steps=total,
        coefficients=NS_COEFFICIENTS[cfg.muon_ns_coefficients],
        ns_dtype=cfg.muon_ns_dtype,
    )
    muon.param_groups[0].update(max_lr=cfg.muon_lr, name="muon")
    return [sgd, muon]


# ===== the schedule ==============================================================================


def check_schedule(cfg: Config, total_steps: int) -> None:
    """OneCycleLR divides by the length of each phase: a phase under one step would crash it."""
    if cfg.schedule != "one_cycle":
        return
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


def make_schedulers(optimizers: list, cfg: Config, steps_per_epoch: int, model=None) -> list:
    """One scheduler per optimizer, stepped every batch: One Cycle, or a linear decay of every
    group's lr from its peak to 0 over the run (the early parameters' group over their epochs)."""
    if cfg.schedule == "one_cycle":
        return [make_scheduler(o, cfg, steps_per_epoch) for o in optimizers]
    total = total_steps(cfg, steps_per_epoch)
    early_epochs = model.early_parameters()[1] if hasattr(model, "early_parameters") else 0
    # a fraction of an epoch counts whole steps, rounded up (the speedrun: 0.2 x 32 -> 7)
    early = max(1, math.ceil(early_epochs * steps_per_epoch - 1e-9))

    def decay(length):
        return lambda step: max(0.0, 1 - step / length)

    return [
        torch.optim.lr_scheduler.LambdaLR(
            o, [decay(early if g.get("name") == "early" else total) for g in o.param_groups]
        )
        for o in optimizers
    ]


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
    half_batchnorm: bool = False  # with half: BatchNorm fp16 too (the speedrun)

    def __post_init__(self):
        self.autocast = self.autocast or nullcontext()

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.float16 if self.half else torch.float32

    def prepare(self, model: nn.Module) -> nn.Module:
        """The net in this precision: with half, fp16 but for BatchNorm (its statistics and
        affine parameters stay fp32, which torch's batch norm accepts beside fp16 inputs),
        unless half_batchnorm."""
        if self.half:
            model.half()
        if self.half and not self.half_batchnorm:
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.float()
        return model


def precision(cfg: Config, device: torch.device, batch_size: int) -> Precision:
    """The precision of Config.amp_dtype on `device`."""
    if cfg.amp and (
        cfg.amp_dtype == "half" or (cfg.amp_dtype == "auto_half" and device.type == "cuda")
    ):
        return Precision(half=True, loss_scale=float(batch_size), half_batchnorm=cfg.half_batchnorm)
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
    if not amp or choice in ("half", "auto_half") or (choice == "auto" and device_type != "cuda"):
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


def averaging(cfg: Config, model: nn.Module, steps: int):
    """(EMA, lookahead), each None when cfg turns it off."""
    swa = torch.optim.swa_utils
    ema = (
        swa.AveragedModel(model, multi_avg_fn=swa.get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
        if cfg.ema > 0
        else None
    )
    lookahead = (
        Lookahead(model, steps, cfg.lookahead, cfg.lookahead_every) if cfg.lookahead > 0 else None
    )
    return ema, lookahead


# ===== the optimisation step =====================================================================


class Stepper:
    """Everything one optimisation step needs, built once from the config and the net: the
    optimizers and their schedules, the precision (autocast, GradScaler, half and its loss
    scale), lookahead and EMA. Loops call `zero_grad()`, `step(loss)` and read `lr`;
    checkpoints take `state_dict()`. Nothing else steps an optimizer or a scheduler."""

    def __init__(self, model: nn.Module, cfg: Config, steps_per_epoch: int, prec: Precision):
        self.model, self.precision = model, prec
        steps = total_steps(cfg, steps_per_epoch)
        self.optimizers = make_optimizers(model, cfg, prec.loss_scale, steps)
        self.schedulers = make_schedulers(self.optimizers, cfg, steps_per_epoch, model)
        self.ema, self.lookahead = averaging(cfg, model, steps)
        self.steps_done = 0

    @property
    def param_groups(self) -> list[dict]:
        """Every optimizer's groups, the first in --max_lr's units."""
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def lr(self) -> float:
        """The lr the next step uses, in the units of a mean loss (first group)."""
        return self.optimizers[0].param_groups[0]["lr"] * self.precision.loss_scale

    def lrs(self) -> dict:
        """Every group's next lr by name (mean-loss units for SGD's)."""
        scale = self.precision.loss_scale
        return {
            g.get("name", str(i)): g["lr"] * (scale if g.get("name") != "muon" else 1)
            for i, g in enumerate(self.param_groups)
        }

    def constant_lr(self) -> None:
        """No schedule: every later step at the lr each group has now (debug modes)."""
        self.schedulers = []

    def no_averaging(self) -> None:
        """No EMA, no lookahead: the steps alone move the weights (the LR range test)."""
        self.ema = self.lookahead = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self, loss: torch.Tensor) -> None:
        """Backward through `loss` (a batch mean), one step of every optimizer, the schedules,
        and the weight averages."""
        p, scaler = self.precision, self.precision.scaler
        if scaler is not None:  # fp16 autocast: scale the loss so small gradients do not underflow
            scaler.scale(loss).backward()
            for o in self.optimizers:
                scaler.step(o)
            scaler.update()
        else:  # half: the batch's losses summed (loss_scale), as airbench94 does
            (loss * p.loss_scale if p.half else loss).backward()
            for o in self.optimizers:
                o.step()
        for s in self.schedulers:
            s.step()
        self.steps_done += 1
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        if self.lookahead is not None:
            self.lookahead.step(self.model, self.steps_done)

    def finish(self) -> None:
        """After the last step: the weights become the lookahead average, if there is one."""
        if self.lookahead is not None:
            self.lookahead.apply_average(self.model)

    def state_dict(self) -> dict:
        def own(part):
            return part.state_dict() if part is not None else None

        return {
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "ema": own(self.ema),
            "lookahead": own(self.lookahead),
            "scaler": own(self.precision.scaler),
            "steps_done": self.steps_done,
        }

    def load_state_dict(self, state: dict) -> None:
        for part, saved in zip(self.optimizers, state["optimizers"]):
            part.load_state_dict(saved)
        for part, saved in zip(self.schedulers, state["schedulers"]):
            part.load_state_dict(saved)
        for name in ("ema", "lookahead"):
            if getattr(self, name) is not None:
                getattr(self, name).load_state_dict(state[name])
        if self.precision.scaler is not None:
            self.precision.scaler.load_state_dict(state["scaler"])
        self.steps_done = state["steps_done"]
