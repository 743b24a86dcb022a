import pickle
import urllib.error

import numpy as np
import pytest
import torch

from conftest import write_standard_layout
from resnetf import augment
from resnetf.config import Config
from resnetf.data import CifarDataset, DataError, load_cifar10, make_loader, split_val


def test_loads_standard_layout_as_uint8_hwc(tmp_path):
    write_standard_layout(tmp_path, n_train=100, n_test=50)
    c = load_cifar10(tmp_path, download=False)
    assert c.train_images.shape == (100, 32, 32, 3) and c.train_images.dtype == np.uint8
    assert c.test_images.shape == (50, 32, 32, 3)
    assert c.train_labels.dtype == np.int64 and list(c.test_labels[:12]) == [
        0,
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        9,
        0,
        1,
    ]
    assert c.classes[3] == "class3"
    # CHW rows become HWC images: channel c of pixel (y, x) is row[c*1024 + y*32 + x]
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as f:
        row = pickle.load(f, encoding="latin1")["data"][5]
    assert c.test_images[5, 2, 7, 1] == row[1 * 1024 + 2 * 32 + 7]


def test_truncated_file_gives_a_clear_error(tmp_path):
    write_standard_layout(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="data_batch_3.*not a CIFAR-10 batch"):
        load_cifar10(tmp_path, download=False)


def test_foreign_pickle_gives_a_clear_error(tmp_path):
    write_standard_layout(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump(["not", "a", "batch"], f)
    with pytest.raises(DataError, match="test_batch"):
        load_cifar10(tmp_path, download=False)


def test_wrong_shape_gives_a_clear_error(tmp_path):
    write_standard_layout(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((4, 100), np.uint8), "labels": [0, 1, 2, 3]}, f)
    with pytest.raises(DataError, match=r"shape \(N, 3072\)"):
        load_cifar10(tmp_path, download=False)


def test_missing_file_names_it(tmp_path):
    write_standard_layout(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(DataError, match="missing CIFAR-10 file .*data_batch_5"):
        load_cifar10(tmp_path, download=False)


def test_absent_folder_offline_says_where_to_put_the_files(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError, match="could not download") as e:
        load_cifar10(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in str(e.value)


def test_absent_folder_without_download(tmp_path):
    with pytest.raises(DataError, match="no CIFAR-10 at"):
        load_cifar10(tmp_path, download=False)


def test_split_val_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(10), 100)[np.random.default_rng(0).permutation(1000)]
    train, val = split_val(labels, 250, seed=1)
    assert len(val) == 250 and len(train) == 750
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(range(1000))
    assert sorted(np.bincount(labels[val])) == [25] * 10
    assert np.array_equal(val, split_val(labels, 250, seed=1)[1])
    assert not np.array_equal(val, split_val(labels, 250, seed=2)[1])
    assert len(split_val(labels, 0, seed=1)[1]) == 0
    with pytest.raises(ValueError, match="val_size"):
        split_val(labels, 1000, seed=1)


def _crop_flip_loader(workers, seed):
    # 64 copies of one image with distinct pixels: each output reveals the crop and flip drawn
    image = np.arange(32 * 32 * 3, dtype=np.uint32).reshape(32, 32, 3).astype(np.uint8)
    cfg = Config(cutout=0, normalize=False)
    ds = CifarDataset(
        np.repeat(image[None], 64, 0),
        np.zeros(64, np.int64),
        augment.train_transform(cfg, seed=seed),
    )
    return make_loader(ds, batch_size=8, train=False, workers=workers, seed=seed)


def test_a_batch_is_augmented_the_same_whatever_the_workers_and_anew_each_epoch():
    epochs = {}
    for workers in (0, 2):
        loader = _crop_flip_loader(workers=workers, seed=3)
        for epoch in (0, 1):
            loader.dataset.set_epoch(epoch)
            epochs[workers, epoch] = torch.stack([x for x, _ in loader])  # 8 batches of 8
    # seeded per (seed, epoch, batch): which worker builds a batch does not matter
    assert torch.equal(epochs[0, 0], epochs[2, 0]) and torch.equal(epochs[0, 1], epochs[2, 1])
    assert not torch.equal(epochs[0, 0], epochs[0, 1])  # a new epoch draws new crops and flips
    # every batch (8 copies of one image) draws its own: no batch replays another's RNG state
    assert len({bytes(batch.numpy()) for batch in epochs[2, 0]}) == 8


class _Hostile:
    """A pickle that runs a shell command when loaded: what a data set must never do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["data_batch_1", "batches.meta"])
def test_a_data_file_that_would_run_code_is_refused_before_it_runs(name, tmp_path, capsys):
    import subprocess
    import sys

    from conftest import REPO

    root = write_standard_layout(tmp_path / "data", n_train=50, n_test=10)
    marker = tmp_path / "marker"
    path = root / "cifar-10-batches-py" / name
    with open(path, "wb") as f:
        pickle.dump({"data": _Hostile(marker), "labels": [0], "label_names": _Hostile(marker)}, f)
    with pytest.raises(DataError, match=f"{name} is refused: it asks for posix.system"):
        load_cifar10(root, download=False)
    assert not marker.exists()
    # through a run's own command: one line, a non-zero exit, the marker never made
    out = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "oc_24ep.py"), f"--data_dir={root}"]
        + ["--device=cpu", "--wandb_mode=disabled", f"--runs_dir={tmp_path / 'runs'}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode != 0 and not marker.exists(), out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) == 1 and "is refused" in out.stderr


def test_the_data_only_reader_loads_the_real_layout_bit_identically(tmp_path, real_or_tiny):
    from resnetf.data import read_pickle

    folder = real_or_tiny / "cifar-10-batches-py"
    for path in sorted(folder.iterdir()):
        with open(path, "rb") as f:
            plain = pickle.load(f, encoding="latin1")  # the test's trusted reference
        ours = read_pickle(path)
        assert plain.keys() == ours.keys()
        for key in plain:
            if isinstance(plain[key], np.ndarray):
                assert ours[key].dtype == plain[key].dtype and np.array_equal(ours[key], plain[key])
            else:
                assert ours[key] == plain[key]


@pytest.fixture(params=["tiny", "real"])
def real_or_tiny(request, tmp_path):
    """The synthetic layout this suite writes, and the JPEG set's unpacked by ../shared's tool."""
    if request.param == "real":
        return request.getfixturevalue("real_subset")
    return write_standard_layout(tmp_path / "tiny", n_train=50, n_test=10)
