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


HEAVY = ("torch", "wandb", "optuna", "matplotlib", "albumentations", "plotly", "pandas")


@pytest.mark.parametrize(
    "flags, code",
    [(["--help"], 0), (["--max_lrr", "3"], 2), (["--max_lr=-1"], 2), (["--epochs", "x"], 2)],
)
def test_help_and_bad_flags_answer_without_importing_torch(flags, code):
    """--help, a mistyped flag and a refused value are answered from the config alone: nothing
    heavy is imported before the command line is parsed."""
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['experiments/fast94.py', *{flags!r}]\n"
        "try:\n"
        "    runpy.run_path('experiments/fast94.py', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules], code, file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert f"LOADED [] {code}" in out.stderr, out.stderr[-2000:]


def test_importing_the_package_changes_no_environment_variable():
    probe = (
        "import os; before = dict(os.environ)\n"
        "import resnetf, resnetf.augment, resnetf.train\n"
        "changed = {k for k, v in set(os.environ.items()) ^ set(before.items())}\n"
        # opencv's own loader (imported by albumentations) sets this one, not resnetf
        "print(sorted(changed - {'LD_LIBRARY_PATH'}))"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout.strip() == "[]", out.stderr[-2000:]
