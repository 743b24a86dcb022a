"""The resnetf command and python -m resnetf."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from resnetf.cli import command

TINY = ["--workers=0", "--no_progress", "--batch_size=10", "--width=0.0625"]


def test_the_resnetf_command_trains_an_experiment_file_and_runs_the_other_tools(
    tiny_data, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["resnetf"])
    command(
        [
            "train",
            "experiments/oc_24ep.py",
            f"--data_dir={tiny_data}",
            f"--runs_dir={tmp_path}",
            "--debug=fast",
            *TINY,
        ]
    )
    (run_dir,) = (tmp_path / "debug").iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    assert "experiments/oc_24ep.py" in config["command"] and config["name"] == "oc_24ep"
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    with pytest.raises(SystemExit) as exit_:
        command(["predict", str(run_dir), str(image)])
    assert exit_.value.code == 0 and "x.png" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        command(["nonsense"])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit):
        command(["train", "experiments/nothing.py"])


def test_python_dash_m_resnetf_is_the_command():
    proc = subprocess.run(
        [sys.executable, "-m", "resnetf", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    assert all(name in proc.stdout for name in ("train", "compare", "bench", "predict"))
