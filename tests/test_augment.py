import numpy as np
import pytest
import torch

from resnetf import augment
from resnetf.config import Config

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)


def _apply(tf, image=IMAGE):
    out = tf(image=image)["image"]
    assert isinstance(out, torch.Tensor) and out.shape == (3, 32, 32)
    return out.permute(1, 2, 0).numpy()


def test_everything_off_is_identity():
    tf = augment.train_transform(Config(pad=0, flip=False, cutout=0, normalize=False), seed=0)
    assert np.array_equal(_apply(tf), IMAGE)


def test_crop_is_a_window_of_the_reflect_padded_image_at_every_offset():
    tf = augment.train_transform(Config(flip=False, cutout=0, normalize=False), seed=0)
    padded = np.pad(IMAGE, ((4, 4), (4, 4), (0, 0)), mode="reflect")
    windows = {(dy, dx): padded[dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)}
    seen = set()
    for _ in range(600):
        out = _apply(tf)
        match = [k for k, w in windows.items() if np.array_equal(out, w)]
        assert len(match) == 1, "output is not a 32x32 window of the reflect-padded image"
        seen.add(match[0])
    assert {dy for dy, _ in seen} == set(range(9)) and {dx for _, dx in seen} == set(range(9))


def test_flip_is_horizontal_with_probability_one_half():
    tf = augment.train_transform(Config(pad=0, cutout=0, normalize=False), seed=0)
    outs = [_apply(tf) for _ in range(400)]
    flipped = sum(np.array_equal(o, IMAGE[:, ::-1]) for o in outs)
    assert all(np.array_equal(o, IMAGE) or np.array_equal(o, IMAGE[:, ::-1]) for o in outs)
    assert 160 <= flipped <= 240  # Binomial(400, 0.5): about 4 standard deviations each side


@pytest.mark.parametrize("size", [8, 5])
def test_cutout_is_one_square_hole_inside_the_image_filled_with_the_mean(size):
    tf = augment.train_transform(Config(pad=0, flip=False, cutout=size), seed=0)
    white = np.full((32, 32, 3), 255, np.uint8)  # normalised, no pixel of it is 0
    corners = set()
    for _ in range(200):
        hole = np.all(_apply(tf, white) == 0, axis=2)
        ys, xs = np.nonzero(hole)
        assert hole.sum() == size * size
        assert ys.max() - ys.min() == size - 1 and xs.max() - xs.min() == size - 1
        corners.add((ys.min(), xs.min()))
    assert len(corners) > 50  # the hole moves around


def test_normalization_uses_cifar10_mean_and_std():
    expected = (IMAGE / 255.0 - np.array(augment.CIFAR10_MEAN)) / np.array(augment.CIFAR10_STD)
    for tf in (augment.test_transform(Config()),
               augment.train_transform(Config(pad=0, flip=False, cutout=0), seed=0)):
        out = _apply(tf)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected, atol=1e-5)


def test_test_transform_has_no_randomness():
    tf = augment.test_transform(Config())
    assert np.array_equal(_apply(tf), _apply(tf))
