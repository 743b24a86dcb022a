"""Every knob of a run, its default and why: one dataclass shared by all experiments.

An experiment file builds a `Config` with the values it changes; `parse()` lets the command line
override any field (`--max_lr=0.3` or `--max_lr 0.3`), and `validate()` rejects bad values before
any data is read.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from typing import Literal, Optional, Sequence


class ConfigError(ValueError):
    """A config value out of range; the message starts with the field's name."""


@dataclass
class Config:
    # --- experiment --------------------------------------------------------------------------
    name: str = "resnetf"
    """Experiment name: the W&B group and the prefix of the run folder."""
    seed: int = 0
    """Seeds Python, NumPy, torch, the data order and the augmentations."""

    # --- data --------------------------------------------------------------------------------
    data_dir: str = "data"
    """Folder holding cifar-10-batches-py/ (downloaded there when absent)."""
    download: bool = True
    """Download CIFAR-10 with torchvision when data_dir has no cifar-10-batches-py/."""
    val_size: int = 0
    """Images held out of the training set (stratified, seeded) as a validation split; 0: none."""
    workers: Optional[int] = None
    """DataLoader worker processes; None: one per CPU core, 0: load in the main process."""
    backend: Literal["albumentations", "gpu"] = "albumentations"
    """albumentations: per-image crop/flip in loader workers; gpu: data held on the device and
    augmented batch-wise there. Normalize and cutout run batch-wise on the device for both."""

    # --- augmentation (albumentations, training set only) -------------------------------------
    pad: int = 4
    """Pixels of padding before the random 32x32 crop; 0 turns pad+crop off."""
    pad_mode: Literal["reflect", "constant"] = "reflect"
    """How the padding is filled: mirrored pixels (reflect) or black (constant)."""
    flip: bool = True
    """Random horizontal flip with p=0.5."""
    cutout: int = 8
    """Side of the one square hole cut out of each image (Cutout); 0 turns it off."""
    normalize: bool = True
    """Normalize with the CIFAR-10 per-channel mean and std (train and test)."""

    # --- model -------------------------------------------------------------------------------
    model: Literal["resnetf", "resnet9"] = "resnetf"
    """resnetf: the course project's net as published; resnet9: the corrected DAWNBench-style net."""
    width: float = 1.0
    """Channel multiplier (1.0: 64-128-256-512); small values make CPU runs cheap."""
    dropout: float = 0.1
    """Dropout after the third layer (the course project used 0.1)."""
    softmax_head: bool = False
    """End the net with softmax, as the course project did (a defect: the loss expects logits)."""

    # --- optimisation ------------------------------------------------------------------------
    epochs: int = 24
    """Passes over the training set."""
    batch_size: int = 512
    """Training batch size (the last incomplete batch of an epoch is dropped)."""
    momentum: float = 0.9
    """SGD momentum, used as is when cycle_momentum is off."""
    nesterov: bool = True
    """Nesterov momentum."""
    weight_decay: float = 5e-4
    """L2 weight decay on every parameter (the course project had none)."""
    label_smoothing: float = 0.0
    """Label smoothing of the training loss."""

    # --- One Cycle schedule (torch.optim.lr_scheduler.OneCycleLR, stepped every batch) ---------
    max_lr: float = 0.1552
    """Peak learning rate (the course project's LR-finder pick)."""
    pct_start: float = 0.2
    """Fraction of the steps spent raising the LR."""
    div_factor: float = 10.0
    """Initial LR = max_lr / div_factor."""
    final_div_factor: float = 100.0
    """Final LR = initial LR / final_div_factor."""
    anneal_strategy: Literal["linear", "cos"] = "linear"
    """Shape of the LR ramps."""
    three_phase: bool = False
    """Add a third phase that anneals to the final LR (OneCycleLR's three_phase)."""
    cycle_momentum: bool = False
    """Cycle momentum inversely to the LR between 0.85 and 0.95 (OneCycleLR's default)."""

    # --- evaluation --------------------------------------------------------------------------
    tta_flip: bool = False
    """Test-time augmentation: average the logits of each test image and its mirror."""
    ema: float = 0.0
    """Decay of an exponential moving average of the weights, updated every step and used for
    evaluation; 0 turns it off."""
    eval_every: int = 1
    """Evaluate every N epochs (the last epoch always); 0: only after the last epoch."""

    analysis: bool = True
    """After training: misclassified grid, confusion matrix, per-class accuracy and Grad-CAM
    overlays, as PNG/CSV in the run folder and in W&B."""
    gradcam_images: int = 4
    """Misclassified test images shown with Grad-CAM maps; 0: no Grad-CAM."""
    seeds: int = 1
    """Run the experiment N times (seeds seed..seed+N-1) and report mean +- std."""

    # --- hardware ----------------------------------------------------------------------------
    device: str = "auto"
    """auto (cuda when available, else cpu), cpu, cuda or cuda:N."""
    amp: bool = True
    """bf16 autocast on CUDA (ignored on CPU)."""
    channels_last: bool = True
    """channels_last memory format on CUDA (faster convolutions on tensor cores)."""
    deterministic: bool = False
    """PyTorch's deterministic algorithms and no cudnn autotuning: identical runs on CUDA too,
    at some cost in speed."""
    compile: bool = False
    """torch.compile the model; compile time is reported apart from training time."""

    # --- tuning (Optuna) -----------------------------------------------------------------------
    tune: int = 0
    """Run an Optuna study until it has N finished trials, tuning max_lr, pct_start and dropout on
    the validation split (5000 images unless val_size is set); 0: train once."""
    study: Optional[str] = None
    """Optuna study name; None: the experiment's name."""
    storage: Optional[str] = None
    """Optuna storage URL (sqlite:///path.db, postgresql://user:pw@host/db); None: a SQLite file
    runs/tune/<study>.db. Workers pointed at one URL share the study."""
    pruner: Literal["median", "hyperband", "none"] = "median"
    """Stop unpromising trials early on their per-epoch validation accuracy."""
    max_lr_range: tuple[float, float] = (0.01, 1.0)
    """Search range of max_lr, sampled log-uniformly."""
    pct_start_range: tuple[float, float] = (0.1, 0.5)
    """Search range of pct_start."""
    dropout_range: tuple[float, float] = (0.0, 0.3)
    """Search range of dropout."""
    heartbeat: int = 60
    """Seconds between a running trial's heartbeats; a trial silent for 2x this (a killed
    worker) is marked failed and the study goes on."""
    retrain_best: bool = False
    """After the study, train once with the best parameters on the whole training set and
    report test accuracy."""
    lr_range_test: bool = False
    """Instead of training, run an LR range test: print a suggested max_lr, save the curve."""

    # --- tracking ----------------------------------------------------------------------------
    wandb_mode: Optional[Literal["online", "offline", "disabled"]] = None
    """W&B mode; None: online when logged in to W&B, else offline (sync later with `wandb sync`)."""
    wandb_project: str = "resnetf"
    """W&B project."""
    wandb_entity: Optional[str] = None
    """W&B entity (user or team); None: your default."""
    wandb_group: Optional[str] = None
    """W&B group; None: the experiment's name (a study groups its trials under its own name)."""
    runs_dir: str = "runs"
    """Where run folders (config, metrics, summary, model, W&B files) are written."""
    resume: Optional[str] = None
    """A run folder to continue from its last checkpoint (the run's saved config is used)."""
    checkpoint: bool = True
    """Write checkpoint.pt (model, optimizer, scheduler, EMA, metrics) after every epoch."""
    save_model: bool = True
    """Save the final weights as model.pt in the run folder."""
    progress: bool = True
    """Show a progress bar while an epoch runs."""

    def validate(self) -> "Config":
        """Raise ConfigError naming the first field with a bad value; return self."""
        checks = [
            ("max_lr", self.max_lr > 0, "must be > 0"),
            ("pct_start", 0 < self.pct_start < 1, "must be in (0, 1)"),
            ("dropout", 0 <= self.dropout < 1, "must be in [0, 1)"),
            ("epochs", self.epochs >= 1, "must be >= 1"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("div_factor", self.div_factor > 0, "must be > 0"),
            ("final_div_factor", self.final_div_factor > 0, "must be > 0"),
            ("momentum", 0 <= self.momentum < 1, "must be in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "must be in [0, 1)"),
            ("width", self.width > 0, "must be > 0"),
            ("pad", 0 <= self.pad <= 16, "must be in [0, 16]"),
            ("cutout", 0 <= self.cutout <= 32, "must be in [0, 32]"),
            ("val_size", 0 <= self.val_size < 50_000, "must be in [0, 50000)"),
            ("ema", 0 <= self.ema < 1, "must be in [0, 1)"),
            ("tune", self.tune >= 0, "must be >= 0"),
            ("seeds", self.seeds >= 1, "must be >= 1"),
            ("gradcam_images", 0 <= self.gradcam_images <= 16, "must be in [0, 16]"),
            ("heartbeat", self.heartbeat >= 1, "must be >= 1 second"),
            ("max_lr_range", 0 < self.max_lr_range[0] < self.max_lr_range[1],
             "must be two numbers, 0 < low < high"),
            ("pct_start_range", 0 < self.pct_start_range[0] < self.pct_start_range[1] < 1,
             "must be two numbers, 0 < low < high < 1"),
            ("dropout_range", 0 <= self.dropout_range[0] < self.dropout_range[1] < 1,
             "must be two numbers, 0 <= low < high < 1"),
            ("eval_every", self.eval_every >= 0, "must be >= 0"),
            ("workers", self.workers is None or self.workers >= 0, "must be >= 0"),
            ("device", self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
             "must be auto, cpu, cuda or cuda:N"),
        ]
        for field, ok, rule in checks:
            value = getattr(self, field)
            # NaN compares false everywhere, so `ok` is already False for it
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise ConfigError(f"{field}: {rule} (got {value!r})")
        if self.softmax_head and self.model != "resnetf":
            raise ConfigError(f"softmax_head: only the resnetf model has one (model={self.model})")
        if self.nesterov and self.momentum == 0 and not self.cycle_momentum:
            raise ConfigError("nesterov: needs momentum > 0 (got momentum=0)")
        return self

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def load_run_config(run_dir) -> Config:
    """The Config a run folder was started with (config.json), for --resume."""
    from pathlib import Path

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"resume: no config.json in {run_dir}")
    saved = json.loads(path.read_text())
    names = {f.name for f in dataclasses.fields(Config)}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in names}
    return Config(**fields)


def load_experiment(path) -> Config:
    """The CONFIG of an experiment file (experiments/NAME.py), without running it."""
    import importlib.util
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no experiment file {path}")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CONFIG


def parse(defaults: Config, args: Optional[Sequence[str]] = None, description: str = "") -> Config:
    """Command line -> validated Config. Any field can be overridden as --field=value or
    --field value; a bad value exits with status 2 and a message naming the field."""
    import tyro  # imported here: the package must import without the CLI stack

    cfg = tyro.cli(Config, default=defaults, args=args, description=description or None,
                   use_underscores=True)
    try:
        return cfg.validate()
    except ConfigError as e:
        print(f"error: --{e}", file=sys.stderr)
        raise SystemExit(2) from None
