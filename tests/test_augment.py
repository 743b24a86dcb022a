"""The augmentations of both backends: the albumentations pipeline (per image, in workers), the
batch ops of the gpu backend, and the normalize + cutout that both apply on the device. Where
an albumentations op exists for the same job, it is the reference the torch op must match."""

import albumentations as A
import numpy as np
import pytest
import torch

from resnetf import augment, batch_augment, data
from resnetf.batch_augment import BatchAugment
from resnetf.config import Config

IMAGE = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
PADDED = np.pad(IMAGE, ((4, 4), (4, 4), (0, 0)), mode="reflect")
WINDOWS = {(dy, dx): PADDED[dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)}
CPU = torch.device("cpu")


def _albumentations(cfg, n, image=IMAGE):
    tf = augment.train_transform(cfg, seed=0)
    outs = [tf(image=image)["image"] for _ in range(n)]
    assert all(o.dtype == np.uint8 and o.shape == (32, 32, 3) for o in outs)
    return outs


def _gpu(cfg, n, image=IMAGE):
    batch = torch.from_numpy(np.repeat(image[None], n, 0)).permute(0, 3, 1, 2)
    out = BatchAugment(cfg.replace(normalize=False, cutout=0), CPU, train=True, geometric=True)(
        batch
    )
    return list(out.round().to(torch.uint8).permute(0, 2, 3, 1).numpy())


BACKENDS = {"albumentations": _albumentations, "gpu": _gpu}


def test_everything_off_is_identity():
    cfg = Config(pad=0, flip=False)
    for backend in BACKENDS.values():
        assert np.array_equal(backend(cfg, 1)[0], IMAGE)


@pytest.mark.parametrize("backend", BACKENDS)
def test_crop_is_a_window_of_the_reflect_padded_image_at_every_offset(backend):
    seen = set()
    for out in BACKENDS[backend](Config(flip=False), 600):
        match = [k for k, w in WINDOWS.items() if np.array_equal(out, w)]
        assert len(match) == 1, "output is not a 32x32 window of the reflect-padded image"
        seen.add(match[0])
    # both backends draw every offset of the 9 x 9 range, extremes included
    assert {dy for dy, _ in seen} == set(range(9)) and {dx for _, dx in seen} == set(range(9))


@pytest.mark.parametrize("backend", BACKENDS)
def test_constant_padding_is_black(backend):
    outs = BACKENDS[backend](Config(flip=False, pad_mode="constant"), 300)
    assert any((o[0] == 0).all() for o in outs)  # some crops start in the padding


@pytest.mark.parametrize("backend", BACKENDS)
def test_flip_is_horizontal_with_probability_one_half(backend):
    outs = BACKENDS[backend](Config(pad=0), 400)
    flipped = sum(np.array_equal(o, IMAGE[:, ::-1]) for o in outs)
    assert all(np.array_equal(o, IMAGE) or np.array_equal(o, IMAGE[:, ::-1]) for o in outs)
    assert 160 <= flipped <= 240  # Binomial(400, 0.5): about 4 standard deviations each side


def _hole_corners(holes: np.ndarray, size: int) -> list:
    corners = []
    for hole in holes:
        ys, xs = np.nonzero(hole)
        assert hole.sum() == size * size, "one square hole of the asked size"
        assert ys.max() - ys.min() == size - 1 and xs.max() - xs.min() == size - 1
        corners.append((ys.min(), xs.min()))
    return corners


@pytest.mark.parametrize("size", [8, 5])
def test_cutout_matches_coarse_dropout_in_size_and_placement(size):
    ones = torch.ones(1000, 3, 32, 32)
    out = batch_augment.cutout(ones, size, torch.Generator().manual_seed(0))
    ours = _hole_corners((out == 0).all(1).numpy(), size)
    ref = A.CoarseDropout(
        num_holes_range=(1, 1),
        hole_height_range=(size, size),
        hole_width_range=(size, size),
        fill=0,
        p=1.0,
    )
    ref.set_random_seed(0)
    theirs = _hole_corners(
        [(ref(image=np.ones((32, 32, 3), np.float32))["image"] == 0).all(2) for _ in range(1000)],
        size,
    )
    # both keep the hole wholly inside the image, and both reach every edge
    for corners in (ours, theirs):
        ys, xs = zip(*corners)
        assert (min(ys), max(ys), min(xs), max(xs)) == (0, 32 - size, 0, 32 - size)


def test_cutout_fills_the_mean_after_normalization():
    cfg = Config(pad=0, flip=False)
    white = torch.full((4, 3, 32, 32), 255, dtype=torch.uint8)
    out = BatchAugment(cfg, CPU, train=True, geometric=True)(white)
    assert ((out == 0).all(1).sum((1, 2)) == 64).all()
    assert (out[(out != 0)] > 0).all()  # the rest is white, well above the mean


def test_normalization_matches_albumentations_normalize():
    expected = A.Normalize(mean=data.CIFAR10_MEAN, std=data.CIFAR10_STD)(image=IMAGE)["image"]
    batch = torch.from_numpy(IMAGE).permute(2, 0, 1)[None]
    for train in (False, True):  # train adds nothing when crop, flip and cutout are off
        out = BatchAugment(Config(pad=0, flip=False, cutout=0), CPU, train=train, geometric=True)(
            batch
        )
        assert out.dtype == torch.float32
        np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_eval_path_has_no_randomness():
    batch = torch.from_numpy(IMAGE).permute(2, 0, 1)[None].repeat(8, 1, 1, 1)
    finish = BatchAugment(Config(), CPU, train=False, geometric=True)
    out = finish(batch)
    assert torch.equal(out, finish(batch)) and torch.equal(out[0], out[7])


def test_batch_ops_are_reproducible_from_the_seed():
    batch = torch.from_numpy(IMAGE).permute(2, 0, 1)[None].repeat(16, 1, 1, 1)
    a = BatchAugment(Config(seed=1), CPU, train=True, geometric=True)(batch)
    b = BatchAugment(Config(seed=1), CPU, train=True, geometric=True)(batch)
    c = BatchAugment(Config(seed=2), CPU, train=True, geometric=True)(batch)
    assert torch.equal(a, b) and not torch.equal(a, c)
