"""Albumentations pipelines: the course project's augmentations, corrected.

Train: pad 4 (reflect) + random 32x32 crop, horizontal flip, normalize, one 8x8 cutout hole,
to tensor. Test: normalize, to tensor. Each op can be switched off from the config.
"""
from __future__ import annotations

import os

# albumentations looks up its latest version online at import; training must not wait on that
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

# per-channel statistics of the CIFAR-10 training set, on the 0-1 scale
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

_BORDER = {"reflect": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT}


def train_transform(cfg, seed: int | None = None) -> A.Compose:
    ops = []
    if cfg.pad > 0:
        # the course project cropped 32x32 out of 32x32, a no-op: the padding is the fix
        ops += [A.Pad(padding=cfg.pad, border_mode=_BORDER[cfg.pad_mode]), A.RandomCrop(32, 32)]
    if cfg.flip:
        ops.append(A.HorizontalFlip(p=0.5))
    if cfg.normalize:
        ops.append(_normalize())
    if cfg.cutout > 0:
        # after Normalize, so fill=0 paints the hole with the dataset mean (Cutout's choice)
        ops.append(A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(cfg.cutout, cfg.cutout),
                                   hole_width_range=(cfg.cutout, cfg.cutout), fill=0, p=1.0))
    ops.append(ToTensorV2())
    return A.Compose(ops, seed=seed)


def test_transform(cfg) -> A.Compose:
    return A.Compose(([_normalize()] if cfg.normalize else []) + [ToTensorV2()])


def _normalize() -> A.Normalize:
    return A.Normalize(mean=CIFAR10_MEAN, std=CIFAR10_STD, max_pixel_value=255.0)
