"""The gpu backend's loader, the fast-path options (EMA, torch.compile) and the benchmark."""

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_dir_of
from resnetf import models, run
from resnetf.data import CifarDataset, DeviceLoader
from resnetf.train import compile_model

CPU = torch.device("cpu")


def test_device_loader_shuffles_every_image_once_per_epoch():
    images = np.arange(103)[:, None, None, None].repeat(32, 1).repeat(32, 2).repeat(3, 3)
    loader = DeviceLoader(images.astype(np.uint8), np.arange(103), 10, True, CPU, seed=0)
    assert len(loader) == 10  # the partial batch of 3 is dropped, as in training
    epochs = [torch.cat([y for _, y in loader]) for _ in range(2)]
    for labels in epochs:
        assert len(labels) == 100 and len(set(labels.tolist())) == 100
    assert not torch.equal(epochs[0], epochs[1])
    x, y = next(iter(loader))
    assert x.dtype == torch.uint8 and x.shape == (10, 3, 32, 32)
    assert torch.equal(x[:, 0, 0, 0].long(), y)  # images travel with their labels
    again = DeviceLoader(images.astype(np.uint8), np.arange(103), 10, True, CPU, seed=0)
    assert torch.equal(torch.cat([y for _, y in again]), epochs[0])


def test_dataset_item_and_batch_fetch_agree():
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    ds = CifarDataset(images, np.arange(6))
    x, y = ds.__getitems__([4, 1])
    assert torch.equal(x[0], ds[4][0]) and torch.equal(x[1], ds[1][0]) and y.tolist() == [4, 1]
    assert ds[4][0].shape == (3, 32, 32) and torch.equal(
        ds[4][0].permute(1, 2, 0), torch.from_numpy(images[4])
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["albumentations", "gpu"])
def test_both_backends_train_and_are_reproducible(tiny_cfg, backend):
    cfg = tiny_cfg.replace(backend=backend, epochs=3, analysis=False)
    a, b = run(cfg), run(cfg)
    ma, mb = (pd.read_csv(run_dir_of(s) / "metrics.csv") for s in (a, b))
    cols = ["train_loss", "train_acc", "test_loss", "test_acc"]
    pd.testing.assert_frame_equal(ma[cols], mb[cols])
    # it learned: the weights moved away from their seeded start and the loss went down
    torch.manual_seed(cfg.seed)
    start = models.build(cfg).state_dict()
    trained = torch.load(run_dir_of(a) / "model.pt")["state_dict"]
    assert not torch.equal(start["fc.weight"], trained["fc.weight"])
    assert ma["train_loss"].iloc[-1] < ma["train_loss"].iloc[0]


@pytest.mark.slow
def test_ema_weights_are_saved_and_evaluated(tiny_cfg):
    plain = run(tiny_cfg.replace(epochs=3, analysis=False))
    averaged = run(tiny_cfg.replace(epochs=3, analysis=False, ema=0.9))
    a, b = (torch.load(run_dir_of(s) / "model.pt")["state_dict"] for s in (plain, averaged))
    assert set(a) == set(b)  # the averaged net, saved as a plain net
    # same seed, same training: only the averaging can make the saved weights differ
    assert not torch.equal(a["fc.weight"], b["fc.weight"])
    ma, mb = (pd.read_csv(run_dir_of(s) / "metrics.csv") for s in (plain, averaged))
    assert ma["train_loss"].tolist() == mb["train_loss"].tolist()
    assert ma["test_loss"].tolist() != mb["test_loss"].tolist()  # evaluated on the average


@pytest.mark.slow
def test_eval_every_skips_epochs_but_not_the_last(tiny_cfg):
    summary = run(tiny_cfg.replace(epochs=3, eval_every=0))
    metrics = pd.read_csv(run_dir_of(summary) / "metrics.csv")
    assert metrics["test_acc"].isna().tolist() == [True, True, False]


@pytest.mark.slow
def test_compile_warm_up_leaves_the_weights_as_they_were():
    from resnetf.models import ResNet9

    model = ResNet9(width=0.0625)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compiled, _ = compile_model(
        model,
        (4, 3, 32, 32),
        [3],
        torch.nn.CrossEntropyLoss(),
        torch.autocast("cpu", enabled=False),
    )
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics too
    assert all(p.grad is None for p in model.parameters())
    x = torch.randn(3, 3, 32, 32)
    compiled.eval(), model.eval()
    torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.slow
def test_albumentations_run_does_not_depend_on_the_number_of_workers(tiny_cfg):
    # each batch's augmentations are seeded by (seed, epoch, batch), and the loader is iterated
    # exactly once per epoch (a progress bar that called iter() twice once broke this)
    runs = [
        run(tiny_cfg.replace(backend="albumentations", workers=w, analysis=False)) for w in (0, 2)
    ]
    a, b = (pd.read_csv(run_dir_of(s) / "steps.csv") for s in runs)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
