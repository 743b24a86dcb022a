"""The albumentations pipeline, run per image in the loader's workers: the geometric part.

Train: pad 4 (reflect) + random 32x32 crop, horizontal flip (p=0.5), on HWC uint8 arrays
(`CifarDataset` turns them into tensors). Normalization and the 8x8 cutout follow batch-wise on
the device (`batch_augment.BatchAugment`) for both backends: per image on a CPU they cost more
than the rest of the pipeline together (albumentations' CoarseDropout alone: ~150 us an image),
and sending uint8 instead of float32 moves 4x fewer bytes. Test images need no transform.
"""

from __future__ import annotations

import os


def _import_albumentations():
    """albumentations looks up its latest version online when first imported, unless
    NO_ALBUMENTATIONS_UPDATE is set: training must not wait on that, and the user's environment
    is theirs, so the variable is set for the import only."""
    before = os.environ.get("NO_ALBUMENTATIONS_UPDATE")
    os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
    try:
        import albumentations
    finally:
        if before is None:
            del os.environ["NO_ALBUMENTATIONS_UPDATE"]
        else:
            os.environ["NO_ALBUMENTATIONS_UPDATE"] = before
    return albumentations


A = _import_albumentations()

import cv2  # noqa: E402

_BORDER = {"reflect": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT}


def train_transform(cfg, seed: int | None = None) -> A.Compose:
    ops = []
    if cfg.pad > 0:
        # the course project cropped 32x32 out of 32x32, a no-op: the padding is the fix
        ops += [A.Pad(padding=cfg.pad, border_mode=_BORDER[cfg.pad_mode]), A.RandomCrop(32, 32)]
    if cfg.flip:
        ops.append(A.HorizontalFlip(p=0.5))
    # shapes are fixed by construction; skipping Compose's per-call check saves about 10%
    return A.Compose(ops, seed=seed, is_check_shapes=False)
