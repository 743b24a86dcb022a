"""Files the repo reads back, damaged or hand-edited (resnetf.files): one line naming the file and
what is wrong, never a traceback; the command ends cleanly or skips that folder and says so. The
tests damage copies of real run folders made by the repo, and check with checksums that nothing
that existed before changed."""

import hashlib
import json
import shutil

import pytest

from conftest import REPO
from resnetf import compare, main
from resnetf.config import load_experiment
from resnetf.files import FileDamaged, read_json
from resnetf.train import run

EXPERIMENT = load_experiment(REPO / "experiments" / "oc_24ep.py")


def _sums(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_data):
    """Two finished tiny runs (widths 0.0625 and 0.125), as the repo writes them."""
    runs = tmp_path_factory.mktemp("made") / "runs"
    base = dict(model="resnet9", epochs=2, batch_size=20, workers=0, device="cpu")
    flags = dict(data_dir=str(tiny_data), runs_dir=str(runs), wandb_mode="disabled", **base)
    folders = [
        run(EXPERIMENT.replace(width=w, progress=False, analysis=False, **flags))["run_dir"]
        for w in (0.0625, 0.125)
    ]
    return [p for p in map(type(runs), folders)]


def _copy(made, tmp_path):
    out = tmp_path / "runs"
    for folder in made:
        shutil.copytree(folder, out / folder.name)
    return [out / f.name for f in made]


def test_json_cut_short_names_the_file(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text('{"status": "finished", "final_test')
    with pytest.raises(FileDamaged, match=f"{path} is cut short"):
        read_json(path)
    path.write_text("[1, 2]")
    with pytest.raises(FileDamaged, match="holds list"):
        read_json(path)


def test_compare_skips_a_folder_whose_summary_is_cut_short_and_says_so(made, tmp_path, capsys):
    good, cut = _copy(made, tmp_path)
    (cut / "summary.json").write_text((cut / "summary.json").read_text()[:25])
    before = _sums(tmp_path)
    runs, skipped = compare.find_runs([str(tmp_path / "runs")])
    assert runs == [good] and skipped == {"a damaged file": 1}
    err = capsys.readouterr().err
    assert f"skipped {cut}" in err and "summary.json is cut short" in err
    assert _sums(tmp_path) == before  # nothing that existed was changed


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda c: {**c, "epochs": "ten"}, "epochs: 'ten' is not a number"),
        (lambda c: {**c, "model": "resnet99"}, "model: 'resnet99' is not one of"),
        (lambda c: "not an object", "holds str"),
    ],
)
def test_resume_of_a_hand_edited_config_is_one_line(damage, message, made, tmp_path, capsys):
    folder, _ = _copy(made, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(damage(config)))
    before = _sums(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(EXPERIMENT, [f"--resume={folder}"])
    err = capsys.readouterr().err
    assert e.value.code == 1 and len(err.strip().splitlines()) == 1 and message in err, err
    assert _sums(tmp_path) == before


def test_resume_with_another_nets_checkpoint_is_one_line(made, tmp_path, capsys):
    narrow, wide = _copy(made, tmp_path)
    for folder in (narrow, wide):  # a run stopped mid-way: no summary yet
        (folder / "summary.json").unlink()
    shutil.copy(wide / "checkpoint.pt", narrow / "checkpoint.pt")  # another run's weights
    before = _sums(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(EXPERIMENT, [f"--resume={narrow}"])
    err = capsys.readouterr().err
    assert e.value.code == 1 and len(err.strip().splitlines()) == 1, err
    assert "another run's checkpoint" in err and "size mismatch" in err
    assert _sums(tmp_path) == before


def _model_file(made, tmp_path, damage):
    import torch

    saved = torch.load(made[0] / "model.pt", weights_only=True)
    damage(saved)
    path = tmp_path / "model.pt"
    torch.save(saved, path)
    return path


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: s["config"].update(model="resnet99"), "model: 'resnet99' is not one of"),
        (lambda s: s.pop("config"), "has no 'config'"),
        (lambda s: s["config"].update(width="wide"), "width: 'wide' is not a number"),
        (lambda s: s.update(config=[1, 2]), "has a list as its 'config'"),
        (lambda s: s.update(classes=[0, 1]), "'classes' are not all names"),
        (lambda s: s["state_dict"].update(extra="text"), "values that are not tensors"),
    ],
)
def test_predict_with_a_damaged_model_file_is_one_line(damage, message, made, tmp_path):
    import subprocess
    import sys

    from PIL import Image

    path = _model_file(made, tmp_path, damage)
    Image.new("RGB", (32, 32)).save(tmp_path / "cat.png")
    before = _sums(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "resnetf.predict", str(path), str(tmp_path / "cat.png")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and message in lines[0], proc.stderr
    assert str(path) in lines[0]
    assert _sums(tmp_path) == before


def test_a_run_an_earlier_version_recorded_with_an_idle_field_still_resumes(made, tmp_path):
    folder, _ = _copy(made, tmp_path)
    (folder / "summary.json").unlink()  # stopped after its last checkpoint
    config = json.loads((folder / "config.json").read_text())
    # an earlier version took Muon's lr on an SGD run (it did nothing): the run is still its own
    (folder / "config.json").write_text(json.dumps({**config, "muon_lr": 0.3}))
    main(EXPERIMENT, [f"--resume={folder}"])
    assert json.loads((folder / "summary.json").read_text())["status"] == "finished"
