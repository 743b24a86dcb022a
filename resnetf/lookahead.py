"""Lookahead weight averaging, as airbench94 does it: every few steps the weights are pulled to a
running average of themselves and the average is copied back into the net.

The pull grows over the run, decay = base**every * (step / total)**3: early on the average
follows the weights (decay ~ 0), late it damps the last steps' noise (decay -> 0.95**5 ~ 0.77).
At the end the weights become the average (`finish`). BatchNorm running statistics are averaged
with the weights, so the net stays consistent.
"""
from __future__ import annotations

import torch
from torch import nn


class Lookahead:
    def __init__(self, model: nn.Module, total_steps: int, base: float = 0.95, every: int = 5):
        self.total_steps, self.base, self.every = total_steps, base, every
        self.average = {k: v.detach().clone() for k, v in model.state_dict().items()
                        if v.is_floating_point()}

    def decay(self, step: int) -> float:
        return self.base ** self.every * (step / self.total_steps) ** 3

    @torch.no_grad()
    def step(self, model: nn.Module, step: int) -> None:
        """Call after optimizer step number `step` (1-based); acts on every `every`-th."""
        if step % self.every == 0:
            self._pull(model, self.decay(step))

    @torch.no_grad()
    def finish(self, model: nn.Module) -> None:
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
