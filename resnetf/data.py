"""CIFAR-10 from its standard python-pickle layout, a stratified validation split, and loaders.

`load_cifar10(root)` reads ROOT/cifar-10-batches-py/ itself (no md5 check, so re-exported
copies load too) and asks torchvision to download the archive only when that folder is absent.
Images stay uint8 NHWC in memory; the albumentations backend augments them per image in the
loader's workers (`CifarDataset`, `make_loader`), the gpu backend batch-wise on the device
(`DeviceLoader`).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# per-channel statistics of the CIFAR-10 training set, on the 0-1 scale
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class DataError(RuntimeError):
    """CIFAR-10 is missing, cannot be downloaded, or a file is not a CIFAR-10 batch."""


@dataclass
class Cifar10:
    train_images: np.ndarray  # (N, 32, 32, 3) uint8
    train_labels: np.ndarray  # (N,) int64
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def to_device(self, name: str, device: torch.device) -> torch.Tensor:
        """One array (train_images, test_labels, ...) on `device`, images as uint8 NCHW, copied
        once and kept: the trials of a tuning worker share the copy."""
        key = (name, str(device))
        if key not in self._cache:
            array = torch.from_numpy(getattr(self, name)).to(device)
            self._cache[key] = array.permute(0, 3, 1, 2).contiguous() if array.ndim == 4 else array
        return self._cache[key]

    def cached(self, key, compute):
        """What `compute()` gives for this data, computed once per key and kept: a tuning
        worker's trials share it (the whitening a net computes from the training images)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def fingerprint(self) -> str:
        """A short hash of every image and label: tells whether two runs saw the same data.
        Computed once (the trials of a tuning worker share it)."""
        if "fingerprint" not in self._cache:
            h = hashlib.blake2b(digest_size=8)
            for a in (self.train_images, self.train_labels, self.test_images, self.test_labels):
                h.update(np.ascontiguousarray(a).data)
            self._cache["fingerprint"] = h.hexdigest()
        return self._cache["fingerprint"]


def load_cifar10(root: str | os.PathLike, download: bool = True) -> Cifar10:
    folder = Path(root) / FOLDER
    if not folder.is_dir():
        if not download:
            raise DataError(f"no CIFAR-10 at {folder}. {_where_to_put(folder)}")
        _download(Path(root))
    train = [_read_batch(folder / f) for f in TRAIN_FILES]
    test = [_read_batch(folder / f) for f in TEST_FILES]
    return Cifar10(
        train_images=np.concatenate([b[0] for b in train]),
        train_labels=np.concatenate([b[1] for b in train]),
        test_images=np.concatenate([b[0] for b in test]),
        test_labels=np.concatenate([b[1] for b in test]),
        classes=_read_classes(folder / "batches.meta"),
    )


def _where_to_put(folder: Path) -> str:
    return (
        f"Put the python version of CIFAR-10 ({ARCHIVE_URL}, extracted: data_batch_1..5, "
        f"test_batch, batches.meta) in {folder}/, or pass --data_dir pointing at its parent."
    )


def _download(root: Path) -> None:
    from torchvision.datasets import CIFAR10

    print(f"CIFAR-10 not found under {root}: downloading it with torchvision")
    made = [p for p in (root, *root.parents) if not p.exists()]  # what a failure must take back
    try:
        CIFAR10(str(root), train=True, download=True)
    except Exception as e:  # URLError, socket errors, HTTP errors: all mean the same to the user
        for folder in made:  # deepest first: a failed download leaves no empty data folder
            shutil.rmtree(folder, ignore_errors=True)
        raise DataError(
            f"could not download CIFAR-10 ({type(e).__name__}: {e}). {_where_to_put(root / FOLDER)}"
        ) from e


# what CIFAR-10's pickles hold besides dicts, lists, strings and numbers: numpy arrays, as
# numpy 1 and 2 pickle them (protocol 2 to 5)
DATA_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class NotData(DataError):
    """A pickle that would build something other than data (and so run code) when loaded."""


class DataUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, strings, numbers and numpy arrays, and refuses
    any other global (a function to call, a class to build) before anything of it runs."""

    def find_class(self, module: str, name: str):
        if (module, name) in DATA_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks for {module}.{name}, which is not data")


def read_pickle(path: Path):
    """The one reader of pickled data files (CIFAR-10's batches and meta): their contents, or
    NotData naming the file when its pickle carries anything but data; other damage (cut short,
    not a pickle) raises as the pickle module says."""
    with open(path, "rb") as f:
        try:
            return DataUnpickler(f, encoding="latin1").load()
        except pickle.UnpicklingError as e:
            if "which is not data" in str(e):
                raise NotData(
                    f"{path} is refused: {e}, so loading it would run code; replace it with "
                    f"CIFAR-10's own file"
                ) from None
            raise


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"missing CIFAR-10 file {path}. {_where_to_put(path.parent)}")
    try:
        batch = read_pickle(path)
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except NotData:
        raise
    except Exception as e:  # truncated (EOFError), not a pickle, a pickle of something else
        raise DataError(
            f"{path} is not a CIFAR-10 batch file ({type(e).__name__}: {e}); "
            f"it may be truncated or foreign: replace it"
        ) from e
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(
            f"{path}: expected data of shape (N, 3072) and N labels, "
            f"got {data.shape} and {len(labels)}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels outside 0..9")
    # rows are CHW-flattened; the rest of the package (and albumentations) wants HWC
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def _read_classes(path: Path) -> tuple:
    """The class names of batches.meta; a meta file that is missing or damaged falls back to
    the standard names (it is a nicety), one that carries code is refused (NotData)."""
    try:
        names = tuple(str(n) for n in read_pickle(path)["label_names"])
        return names if len(names) == 10 else CLASSES
    except NotData:
        raise
    except Exception:
        return CLASSES


def split_val(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of indices into (train, val): each class keeps its share."""
    n = len(labels)
    if not 0 <= val_size < n:
        raise ValueError(f"val_size: must be in [0, {n}) for {n} training images (got {val_size})")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    # largest-remainder rounding so the per-class quotas add up to val_size exactly
    quota = counts * val_size / n
    take = np.floor(quota).astype(int)
    take[np.argsort(-(quota - take), kind="stable")[: val_size - take.sum()]] += 1
    val = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    val_idx = np.sort(np.concatenate(val)) if val else np.array([], dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(n), val_idx)
    return train_idx, val_idx


def epoch_seed(seed: int, epoch: int, salt: int = 0) -> int:
    """The seed of everything random in one epoch: a run resumed at an epoch boundary draws
    exactly what the uninterrupted run drew."""
    return (seed * 1_000_003 + epoch * 10_007 + salt) % 2**63


class CifarDataset(Dataset):
    """(image, label) pairs like torchvision's, the image a uint8 CHW tensor; `transform` is an
    albumentations Compose working on the HWC uint8 array."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None, seed: int = 0):
        self.images, self.labels, self.transform, self.seed = images, labels, transform, seed
        # shared with the loader's worker processes, which outlive an epoch (persistent workers)
        self.epoch = torch.zeros(1, dtype=torch.long).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self.epoch[0] = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def _image(self, i) -> np.ndarray:
        image = self.images[i]
        return image if self.transform is None else self.transform(image=image)["image"]

    def __getitem__(self, i):
        return torch.from_numpy(np.ascontiguousarray(self._image(i))).permute(2, 0, 1), int(
            self.labels[i]
        )

    def __getitems__(self, indices):
        # The batch's augmentations are seeded by (seed, epoch, first index): whichever worker
        # builds it, a batch comes out the same, so resuming at an epoch repeats it exactly.
        if self.transform is not None:
            self.transform.set_random_seed(
                epoch_seed(self.seed, int(self.epoch[0]), int(indices[0])) % 2**32
            )
        # DataLoader fetches a whole batch through here: filling one array and converting it
        # once beats a tensor per image plus a collate (measured: 27k vs 17k images/s, 2 cores)
        batch = np.empty((len(indices), 32, 32, 3), np.uint8)
        for k, i in enumerate(indices):
            batch[k] = self._image(i)
        return torch.from_numpy(batch).permute(0, 3, 1, 2), torch.from_numpy(self.labels[indices])


def _collated(batch):
    return batch  # __getitems__ already returns the batch as (images, labels)


def make_loader(
    dataset: CifarDataset,
    batch_size: int,
    train: bool,
    workers: int | None,
    seed: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    if workers is None:
        workers = os.cpu_count() or 1
    # The shuffle has a generator of its own: the loader's is also drawn from when an iterator
    # starts (worker seeds), which with persistent workers happens once, not every epoch.
    sampler = (
        torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
        if train
        else None
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=_collated,
        sampler=sampler,
        drop_last=train,  # a tiny last batch would skew BatchNorm; test uses every image
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),  # keeps the global RNG out of it
    )


def set_epoch(loader, seed: int, epoch: int) -> None:
    """Seed a training loader's shuffle and augmentations for `epoch` (either backend)."""
    shuffle = loader.sampler.generator if isinstance(loader, DataLoader) else loader.generator
    shuffle.manual_seed(epoch_seed(seed, epoch))
    for owner in (loader, loader.dataset):  # DeviceLoader (alternating flip), CifarDataset
        if hasattr(owner, "set_epoch"):
            owner.set_epoch(epoch)


class DeviceLoader:
    """The gpu backend's loader: the images live on the device as uint8 NCHW and batches are
    index gathers there, so an epoch moves no image across PCIe. Yields uint8 (x, y) pairs,
    as the albumentations loader does; `BatchAugment` turns them into network input.

    `alternating_flip` flips each image by a bit of its own, drawn once from the seed, in even
    epochs and by its opposite in odd ones (airbench94's alternating flip). It lives here, not in
    BatchAugment, because it follows each image across epochs and only the loader knows which
    image is which."""

    def __init__(
        self,
        images,
        labels,
        batch_size: int,
        train: bool,
        device: torch.device,
        seed: int = 0,
        alternating_flip: bool = False,
    ):
        # numpy arrays are HWC as loaded; tensors come NCHW from Cifar10.to_device
        self.images = (
            torch.from_numpy(images).to(device).permute(0, 3, 1, 2).contiguous()
            if isinstance(images, np.ndarray)
            else images.to(device)
        )
        self.labels = torch.as_tensor(labels).to(device)
        self.batch_size, self.train, self.dataset = batch_size, train, None
        self.generator = torch.Generator(device=device).manual_seed(seed) if train else None
        self.flipped, self.epoch = None, 0
        if alternating_flip:
            g = torch.Generator(device=device).manual_seed(epoch_seed(seed, 0, salt=2))
            self.flipped = torch.rand(len(self.labels), device=device, generator=g) < 0.5

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        order = (
            torch.randperm(n, device=self.labels.device, generator=self.generator)
            if self.train
            else torch.arange(n, device=self.labels.device)
        )
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.images[idx]
            if self.flipped is not None:
                flip = self.flipped[idx] ^ (self.epoch % 2 == 1)
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
            yield x, self.labels[idx]


def write_random_layout(root, n_train: int = 100, n_test: int = 50, seed: int = 0):
    """Random images in ROOT/cifar-10-batches-py/, pickled as the original archive is; class k's
    images are brighter with k, so a model can learn something from them (the tests' and the
    benchmarks' data set, where the real one is not at hand). Returns ROOT."""
    import pickle

    root = Path(root)
    rng, folder = np.random.default_rng(seed), root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n):
        labels = np.arange(n) % 10
        images = rng.integers(0, 100, (n, 3, 32, 32)) + labels[:, None, None, None] * 15
        return {"data": images.reshape(n, -1).astype(np.uint8), "labels": labels.tolist()}

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(n_train // 5)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(n_test)))
    meta = {"label_names": [f"class{k}" for k in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return root
