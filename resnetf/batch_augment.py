"""Batch-wise augmentation in torch, on whatever device the batch is on.

Both backends finish a batch here, on the GPU: uint8 -> float, normalize, brightness and
contrast jitter, cutout. The `gpu`
backend also does the pad + random crop and the flip here, so its images never leave the device;
the `albumentations` backend has done those per image in the loader's workers. Cutout and
normalization run batch-wise for both because they are the slow part of a per-image pipeline
(CoarseDropout alone costs about 150 us an image on a CPU core) and trivially cheap on a GPU.

Semantics match the albumentations ops: reflect padding (BORDER_REFLECT_101), crop offsets
uniform in [0, 2*pad], horizontal flip with p=0.5, one square hole per image placed wholly inside
the image (as CoarseDropout places it) and filled with 0 after normalization, i.e. the mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import CIFAR10_MEAN, CIFAR10_STD, epoch_seed


def cifar10_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std on the 0..255 scale, shaped to broadcast over NCHW."""
    mean = torch.tensor(CIFAR10_MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(CIFAR10_STD, device=device).view(1, 3, 1, 1) * 255
    return mean, std


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """NCHW in 0..255 -> float32, per-channel (x/255 - mean) / std."""
    return (x.float() - mean) / std


def random_crop(
    x: torch.Tensor, pad: int, generator: torch.Generator | None = None, mode: str = "reflect"
) -> torch.Tensor:
    """Pad every image by `pad` and cut a random same-size window out of each."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode=mode)
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # n, h, 1
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # n, 1, w
    batch = torch.arange(n, device=x.device)[:, None, None]
    # advanced indexing around the channel slice puts the indexed dims first: n, h, w, c
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2)


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero one size x size square per image, wholly inside the image."""
    n, _, h, w = x.shape
    y0 = torch.randint(0, h - size + 1, (n, 1, 1), device=x.device, generator=generator)
    x0 = torch.randint(0, w - size + 1, (n, 1, 1), device=x.device, generator=generator)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    hole = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)
    return x.masked_fill(hole[:, None], 0.0)


def color_jitter(
    x: torch.Tensor, brightness: float, contrast: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(x + b) * c per image, b ~ U(-brightness, brightness), c ~ U(1 - contrast, 1 + contrast):
    one draw of each per image, for all its channels and pixels (on normalised images, so b is
    in units of the data's std)."""
    n = x.shape[0]
    b = (torch.rand(n, 1, 1, 1, device=x.device, generator=generator) * 2 - 1) * brightness
    c = 1 + (torch.rand(n, 1, 1, 1, device=x.device, generator=generator) * 2 - 1) * contrast
    return (x + b) * c


class BatchAugment:
    """uint8 batch on the device -> the network's input, in `dtype` and `memory_format`.
    `geometric` adds crop and flip (the gpu backend); `train=False` gives the test-time path:
    normalization only."""

    def __init__(
        self,
        cfg,
        device: torch.device,
        *,
        train: bool,
        geometric: bool = False,
        memory_format=torch.contiguous_format,
        dtype: torch.dtype = torch.float32,
    ):
        self.cfg, self.device, self.train, self.geometric = cfg, device, train, geometric
        self.memory_format, self.dtype = memory_format, dtype
        # made once: building them per batch would be two small host-to-device copies a step
        self.mean, self.std = cifar10_stats(device)
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed + 1) if train else None

    def set_epoch(self, epoch: int) -> None:
        if self.generator is not None:
            self.generator.manual_seed(epoch_seed(self.cfg.seed, epoch, salt=1))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        cfg, g = self.cfg, self.generator
        x = x.float()  # still 0..255, so constant padding is black, as in albumentations
        if self.train and self.geometric:
            if cfg.pad > 0:
                x = random_crop(
                    x, cfg.pad, g, "reflect" if cfg.pad_mode == "reflect" else "constant"
                )
            # the alternating flip is the loader's (it knows each image across epochs): a random
            # flip on top would turn it back into a plain random flip
            if cfg.flip and not cfg.alternating_flip:
                x = random_flip(x, g)
        if cfg.normalize:
            x = normalize(x, self.mean, self.std)
        if self.train and (cfg.brightness > 0 or cfg.contrast > 0):  # no draws when off
            x = color_jitter(x, cfg.brightness, cfg.contrast, g)
        if self.train and cfg.cutout > 0:
            x = cutout(x, cfg.cutout, g)
        return x.to(self.dtype).contiguous(memory_format=self.memory_format)
