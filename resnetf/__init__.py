"""resnetf: a fast ResNet on CIFAR-10 with One Cycle LR, albumentations and W&B tracking."""

from .cli import main
from .config import Config, ConfigError
from .predict import load, probabilities
from .train import run

__all__ = ["Config", "ConfigError", "load", "main", "probabilities", "run"]
