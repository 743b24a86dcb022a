"""The model leaves the run: model.pt that rebuilds its net, the W&B model artifact, load(),
the predict command, W&B groups that mean one config, and what a run records to be rerun."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import REPO, read_wandb_records, run_dir_of
from resnetf import run, train
from resnetf.data import load_cifar10
from resnetf.predict import LoadError, load


def _artifacts(run_dir):
    """The model artifacts the run's .wandb file records (tables are artifacts too)."""
    return [
        r.artifact for r in read_wandb_records(run_dir, "artifact") if r.artifact.type == "model"
    ]


@pytest.mark.slow
def test_a_finished_run_logs_its_model_as_a_wandb_artifact(tiny_cfg):
    summary = run(tiny_cfg.replace(wandb_mode="offline", analysis=False))
    d = run_dir_of(summary)
    (artifact,) = _artifacts(d)
    assert artifact.name == f"model-{summary['wandb_id']}" and artifact.type == "model"
    assert list(artifact.aliases) == ["latest"]
    assert [e.path for e in artifact.manifest.contents] == ["model.pt"]
    metadata = json.loads(artifact.metadata)
    config = json.loads((d / "config.json").read_text())
    assert metadata["final_test_acc"] == summary["final_test_acc"]
    assert metadata["parameters"] == summary["parameters"]
    assert metadata["git_commit"] == config["git_commit"]
    assert metadata["data_fingerprint"] == config["data_fingerprint"]
    assert metadata["data_fingerprint"] == load_cifar10(tiny_cfg.data_dir).fingerprint()


def test_a_stopped_run_leaves_its_last_checkpointed_model(tiny_cfg):
    def stop_after_first(metrics):
        raise train.RunStopped("interrupted", "stopped for the test", failed=True)

    with pytest.raises(train.RunStopped):
        run(
            tiny_cfg.replace(wandb_mode="offline", epochs=3),
            train.Context(on_epoch=stop_after_first),
        )
    (d,) = Path(tiny_cfg.runs_dir).iterdir()
    saved = torch.load(d / "checkpoint.pt", weights_only=False)["model"]
    model = torch.load(d / "model.pt")["state_dict"]
    assert all(torch.equal(saved[k], model[k]) for k in saved)
    (artifact,) = _artifacts(d)
    assert json.loads(artifact.metadata)["status"] == "interrupted"


@pytest.mark.slow
def test_the_best_seed_and_the_retrained_best_are_aliased_best(tiny_cfg):
    from resnetf.repeat import run_seeds

    run_seeds(tiny_cfg.replace(wandb_mode="offline", seeds=2, analysis=False))
    runs = Path(tiny_cfg.runs_dir)
    (aggregate,) = runs.glob("tiny_seeds_*")
    seeds = [
        json.loads((d / "summary.json").read_text())
        for d in runs.glob("tiny_s*_*")
        if d != aggregate
    ]
    best = max(seeds, key=lambda s: s["final_test_acc"])
    (artifact,) = _artifacts(aggregate)
    assert artifact.name == f"model-{best['wandb_id']}" and "best" in artifact.aliases


def test_disabled_wandb_logs_no_artifact_and_says_nothing(tiny_cfg, capsys):
    d = run_dir_of(run(tiny_cfg.replace(analysis=False)))
    assert (d / "model.pt").exists() and not (d / "wandb").exists()
    assert "artifact" not in capsys.readouterr().err.lower()


@pytest.mark.slow
def test_load_rebuilds_the_net_from_a_run_folder_or_its_model_file(tiny_cfg):
    summary = run(tiny_cfg.replace(analysis=False, tta="flip"))
    d = run_dir_of(summary)
    for source in (d, d / "model.pt"):
        net, cfg = load(source)
        assert not net.training and cfg.tta == "flip" and cfg.model == "resnet9"
        assert net.classes == tuple(f"class{k}" for k in range(10))
    saved = torch.load(d / "model.pt")["state_dict"]
    assert all(torch.equal(v, saved[k]) for k, v in net.state_dict().items())
    # a half-precision run's net comes back in half precision, BatchNorm in fp32
    half = run_dir_of(run(tiny_cfg.replace(analysis=False, amp_dtype="half")))
    net, _ = load(half)
    assert net.fc.weight.dtype == torch.float16
    assert all(
        b.running_mean.dtype == torch.float32
        for b in net.modules()
        if isinstance(b, torch.nn.BatchNorm2d)
    )


@pytest.mark.slow
def test_load_says_in_one_line_what_is_wrong(tiny_cfg, tmp_path, monkeypatch):
    d = run_dir_of(run(tiny_cfg.replace(analysis=False)))
    torch.save({"fc.weight": torch.zeros(2)}, tmp_path / "bare.pt")
    with pytest.raises(LoadError, match="not a resnetf model file"):
        load(tmp_path / "bare.pt")
    (tmp_path / "junk.pt").write_text("not torch")
    with pytest.raises(LoadError, match="cannot be read as a torch file"):
        load(tmp_path / "junk.pt")
    saved = torch.load(d / "model.pt")
    saved["config"]["width"] = 0.5  # a config that builds another net than the weights'
    torch.save(saved, tmp_path / "other.pt")
    with pytest.raises(LoadError, match="do not fit the net its config builds"):
        load(tmp_path / "other.pt")
    with pytest.raises(LoadError, match="no such run folder or file"):
        load(tmp_path / "nowhere")
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(LoadError, match="needs W&B online and a login"):
        load("me/resnetf/model-abc123:best")


def _write_pngs(images, folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for k, image in enumerate(images):
        paths.append(folder / f"{k:04d}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


@pytest.mark.slow
def test_predicting_the_test_split_as_pngs_gives_the_runs_own_accuracy(tiny_cfg, tmp_path):
    summary = run(tiny_cfg.replace(analysis=False, tta="flip_translate", epochs=3))
    cifar = load_cifar10(tiny_cfg.data_dir)
    folder = tmp_path / "test_pngs"
    _write_pngs(cifar.test_images, folder)
    csv = tmp_path / "pred.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "resnetf.predict",
            summary["run_dir"],
            str(folder),
            f"--csv={csv}",
            "--topk=3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(csv)
    assert list(table.columns) == [
        "path",
        "class",
        "probability",
        "class_2",
        "probability_2",
        "class_3",
        "probability_3",
    ]
    truth = [cifar.classes[k] for k in cifar.test_labels]
    assert (table["class"] == truth).mean() == summary["final_test_acc"]
    assert (table["probability"] >= table["probability_2"]).all()
    # the probabilities are those of the run's TTA level, not of a single view
    from resnetf import models
    from resnetf.batch_augment import BatchAugment

    net, cfg = load(summary["run_dir"])
    x = BatchAugment(cfg, torch.device("cpu"), train=False)(
        torch.from_numpy(cifar.test_images).permute(0, 3, 1, 2)
    )
    with torch.no_grad():
        expected = models.logits(net, x, "flip_translate").softmax(1).max(1).values
    np.testing.assert_allclose(table["probability"], expected.numpy(), rtol=1e-4)


@pytest.mark.slow
def test_predict_takes_any_image_and_skips_what_it_cannot_read(tiny_cfg, tmp_path):
    d = run_dir_of(run(tiny_cfg.replace(analysis=False)))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 48, 4), dtype=np.uint8), "RGBA").save(
        tmp_path / "big.png"
    )
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8), "L").save(tmp_path / "gray.jpg")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    gradcam = tmp_path / "cam.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "resnetf.predict",
            str(d),
            str(tmp_path / "big.png"),
            str(tmp_path / "gray.jpg"),
            str(tmp_path / "broken.png"),
            f"--gradcam={gradcam}",
            "--topk=2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1  # one image was skipped
    assert [l for l in proc.stderr.splitlines() if l.startswith("skipped")] == [
        f"skipped {tmp_path / 'broken.png'}: " + l.split(": ", 1)[1]
        for l in proc.stderr.splitlines()
        if l.startswith("skipped")
    ]
    assert "broken.png" in proc.stderr and "1 of 2 images were not 32x32" in proc.stderr
    assert "big.png" in proc.stdout and "gray.jpg" in proc.stdout
    with Image.open(gradcam) as image:
        assert image.size[1] > image.size[0]  # one row an image


@pytest.mark.slow
def test_seeds_of_one_config_share_a_group_and_an_ablation_gets_its_own(tiny_cfg):
    from resnetf.tracking import group_of

    base = tiny_cfg.replace(runs_dir="elsewhere", wandb_mode="offline", progress=True, workers=2)
    assert group_of(tiny_cfg) == group_of(base) == group_of(tiny_cfg.replace(seed=7))
    assert group_of(tiny_cfg).startswith("tiny-")
    assert group_of(tiny_cfg.replace(max_lr=0.3)) != group_of(tiny_cfg)
    assert group_of(tiny_cfg.replace(wandb_group="mine")) == "mine"
    summary = run(tiny_cfg.replace(wandb_mode="offline", analysis=False))
    (record,) = read_wandb_records(run_dir_of(summary), "run")
    config = json.loads((run_dir_of(summary) / "config.json").read_text())
    assert record.run.run_group == f"tiny-{config['config_hash']}" == group_of(tiny_cfg)


def test_a_run_records_what_reruns_it(tiny_cfg, monkeypatch):
    import resnetf.train as train_module

    real = train_module.provenance
    monkeypatch.setattr(
        train_module, "provenance", lambda device: {**real(device), "git_dirty": True}
    )
    monkeypatch.setattr(train_module, "git_diff", lambda: "diff --git a/x b/x")
    d = run_dir_of(run(tiny_cfg.replace(analysis=False)))
    config = json.loads((d / "config.json").read_text())
    for key in ("command", "data_fingerprint", "cuda", "cudnn", "host", "git_commit"):
        assert key in config, key
    assert "pytest" in config["command"] or "python" in config["command"]
    assert (d / "diff.patch").read_text().startswith("diff --git")


def test_load_and_probabilities_are_reached_through_import_resnetf():
    import resnetf
    from resnetf import predict

    assert resnetf.load is predict.load and resnetf.probabilities is predict.probabilities
    assert {"load", "probabilities"} <= set(resnetf.__all__)


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--topk=0"], "--topk: must be in 1..10"),
        (["--topk=11"], "--topk: must be in 1..10"),
        (["--csv={tmp}/missing/p.csv"], "--csv: cannot write {tmp}/missing/p.csv: no folder"),
        (["--gradcam={tmp}/missing/c.png"], "--gradcam: cannot write {tmp}/missing/c.png"),
    ],
)
def test_bad_predict_options_are_one_line_before_any_prediction(
    tiny_cfg, tmp_path, monkeypatch, capsys, flags, message
):
    from resnetf import predict

    d = run_dir_of(run(tiny_cfg.replace(analysis=False)))
    image = tmp_path / "one.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)

    def never(*args, **kwargs):
        raise AssertionError("predicted before the options were checked")

    monkeypatch.setattr(predict, "probabilities", never)
    before = sorted(tmp_path.rglob("*"))
    code = predict.main([str(d), str(image), *(f.format(tmp=tmp_path) for f in flags)])
    err = capsys.readouterr().err
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert message.format(tmp=tmp_path) in err
    assert sorted(tmp_path.rglob("*")) == before


def test_images_in_every_mode_are_read_in_the_colours_they_show(tmp_path):
    from resnetf.data import CIFAR10_MEAN
    from resnetf.predict import read_images

    gray16 = tmp_path / "gray16.png"  # a 16-bit PNG holding 78 (x 257): PIL's convert gives 255
    Image.fromarray(np.full((32, 32), 78 * 257, dtype=np.uint16)).save(gray16)
    palette = Image.new("P", (32, 32), 0)
    palette.putpalette([0, 200, 0, 200, 10, 10] + [0] * 762)  # index 0: a hidden green
    palette.paste(1, (0, 0, 16, 32))  # the left half red, the right half transparent
    palette.save(tmp_path / "palette.png", transparency=0)
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # red
    Image.new("F", (32, 32), 0.5).save(tmp_path / "float.tif")
    names = ["gray16.png", "palette.png", "cmyk.jpg", "float.tif"]
    images, read, problems = read_images([tmp_path / n for n in names])
    assert [p.name for p in read] == names[:3]
    assert problems == [
        f"skipped {tmp_path / 'float.tif'}: ValueError: floating-point pixels (mode F) have no "
        f"range to map to 0..255"
    ]
    gray, pal, cmyk = images.astype(int)
    assert (gray == 78).all()
    assert (pal[:, :16] == (200, 10, 10)).all()
    assert (pal[:, 16:] == [round(255 * m) for m in CIFAR10_MEAN]).all()  # not the hidden green
    assert (abs(cmyk - (255, 0, 0)) <= 2).all()
