"""Per-epoch checkpoints, written atomically: a crash or a full disk mid-write leaves the last
good checkpoint in place, never a truncated one."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

NAME = "checkpoint.pt"


def save(run_dir: Path, state: dict) -> bool:
    """Write state to run_dir/checkpoint.pt via a temporary file and a rename. On failure (a
    full disk, say) warn, delete the partial file, keep the previous checkpoint, return False."""
    path, tmp = Path(run_dir) / NAME, Path(run_dir) / (NAME + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
        return True
    except OSError as e:
        tmp.unlink(missing_ok=True)
        warnings.warn(f"checkpoint not written ({e}); the previous one in {run_dir} is kept and "
                      f"training goes on", stacklevel=2)
        return False


def load(run_dir: Path) -> dict:
    path = Path(run_dir) / NAME
    if not path.is_file():
        raise ValueError(f"resume: no {NAME} in {run_dir} (was it a resnetf run folder?)")
    return torch.load(path, map_location="cpu", weights_only=False)
