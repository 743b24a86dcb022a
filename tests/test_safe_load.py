"""Files loaded from outside are data, never code: a model.pt or checkpoint.pt whose pickle would
run something (here: create a marker file) is refused in one line by every path that loads one,
and the marker never appears."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, run_dir_of
from resnetf import checkpoint, run, train
from resnetf.predict import LoadError, load


class CreatesMarker:
    """Unpickling this calls os.system: what a hostile model file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def poison(path: Path, marker: Path) -> None:
    """Rewrite a file resnetf wrote so that loading it with pickle's full powers runs code."""
    saved = torch.load(path, weights_only=True)
    saved["note"] = CreatesMarker(marker)
    torch.save(saved, path)


REFUSED = "holds objects that would run code when loaded"


@pytest.fixture
def poisoned_run(tiny_cfg, tmp_path):
    """A run stopped after its first epoch (resumable), its model.pt and checkpoint.pt made
    hostile; and the marker they would create."""

    def stop(metrics):
        raise train.RunStopped("interrupted", "stopped for the test", failed=True)

    with pytest.raises(train.RunStopped):
        run(tiny_cfg.replace(epochs=2, analysis=False), train.Context(on_epoch=stop))
    (d,) = Path(tiny_cfg.runs_dir).iterdir()
    marker = tmp_path / "marker"
    poison(d / checkpoint.MODEL_NAME, marker)
    poison(d / checkpoint.NAME, marker)
    return d, marker


def test_a_file_resnetf_writes_loads_as_data(tiny_cfg):
    d = run_dir_of(run(tiny_cfg.replace(analysis=False, ema=0.9)))
    assert checkpoint.read_data(d / checkpoint.NAME)["format"] == checkpoint.FORMAT
    net, _ = load(d)
    assert net.classes


def test_load_refuses_a_model_file_that_would_run_code(poisoned_run):
    d, marker = poisoned_run
    for source in (d, d / checkpoint.MODEL_NAME):
        with pytest.raises(LoadError, match=REFUSED) as e:
            load(source)
        assert len(str(e.value).splitlines()) == 1 and "model.pt" in str(e.value)
    assert not marker.exists()


def test_resume_refuses_a_checkpoint_that_would_run_code(poisoned_run, tiny_cfg):
    d, marker = poisoned_run
    with pytest.raises(ValueError, match=REFUSED):
        run(tiny_cfg.replace(resume=str(d)))
    assert not marker.exists()


def test_a_run_that_stops_reads_its_own_checkpoint_as_data(tiny_cfg, tmp_path, capsys):
    """A stopped run (a retrained best, say) saves the model of its last checkpoint: a hostile
    checkpoint put in its folder mid-run is refused, not run."""
    marker = tmp_path / "marker"

    def swap_and_stop(metrics):
        (d,) = Path(tiny_cfg.runs_dir).iterdir()
        poison(d / checkpoint.NAME, marker)
        raise train.RunStopped("interrupted", "stopped for the test", failed=True)

    with pytest.raises(train.RunStopped):
        run(tiny_cfg.replace(epochs=2, analysis=False), train.Context(on_epoch=swap_and_stop))
    assert REFUSED in capsys.readouterr().err
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["predict", "resume"])
def test_the_commands_refuse_in_one_line_and_run_nothing(poisoned_run, tmp_path, command):
    d, marker = poisoned_run
    image = tmp_path / "one.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)
    argv = {
        "predict": ["-m", "resnetf.predict", str(d), str(image)],
        "resume": ["experiments/oc_24ep.py", f"--resume={d}"],
    }[command]
    out = subprocess.run(
        [sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode != 0
    assert len(out.stderr.strip().splitlines()) == 1 and REFUSED in out.stderr, out.stderr
    assert not marker.exists()
