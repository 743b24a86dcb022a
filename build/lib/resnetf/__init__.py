"""resnetf: a fast ResNet on CIFAR-10 with One Cycle LR, albumentations and W&B tracking.

The names below are imported when first used, not at `import resnetf`: an experiment file's
`--help` or a mistyped flag answers without loading torch, the trackers or the plotting stack.
"""

from .config import Config, ConfigError

_LAZY = {"main": "cli", "load": "predict", "probabilities": "predict", "run": "train"}

__all__ = ["Config", "ConfigError", "load", "main", "probabilities", "run"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'resnetf' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
