"""Every knob of a run, its default and why: one dataclass shared by all experiments. An experiment
file builds a `Config` with the values it changes; `parse()` lets the command line override any
field (`--max_lr=0.3` or `--max_lr 0.3`), and `validate()` rejects bad values and combinations
before any data is read. `--help` shows the fields in their groups. Each field declares, once,
its group and whether it changes what a run computes (`= MODEL(default)`, `= RUN(default,
result=False)`) and, where it acts only on one net, optimizer or mode, where (`acts=ON_MUON`):
`--help`, the config hash (the W&B group), a study's identity and the rule that refuses a field
where it does nothing read it from there.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

# what a study can optimise, and which way
OBJECTIVES = {"val_acc": "maximize", "train_seconds": "minimize", "pflop": "minimize"}


class ConfigError(ValueError):
    """A config value out of range; the message starts with the field's name."""


class Group:
    """A --help group, and the declaration of its fields: `name: int = MODEL(4)` puts `name` in
    the group; `result=False` says the field changes where or how a run is kept, watched or
    repeated, not what it computes (left out of the config hash and of a study's identity)."""

    def __init__(self, name: str, description: str):
        self.name, self.description = name, description

    def __call__(self, default, *, result: bool = True, acts: Where | None = None):
        metadata = {"group": self.name, "result": result, "acts": acts}
        return dataclasses.field(default=default, metadata=metadata)


class Not:
    """A condition of `Where`: any value but this one."""

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Not) and other.value == self.value

    def __hash__(self):
        return hash(("Not", self.value))


class Where:
    """Where a field acts, declared with it (`muon_lr: float = OPTIMISATION(0.24, acts=ON_MUON)`):
    every named field within its condition (a value, a tuple of values, or Not(value)). One rule
    reads it (Config.idle): set away from its default where it does nothing, a field is refused;
    left idle by a switch (--optimizer sgd on a Muon recipe), it goes back to its default."""

    def __init__(self, **conditions):
        self.conditions = conditions

    def holds(self, cfg) -> bool:
        return all(_meets(getattr(cfg, f), c) for f, c in self.conditions.items())

    def __str__(self) -> str:
        return " and ".join(_words(f, c) for f, c in self.conditions.items())

    def here(self, cfg) -> str:
        """The named fields as `cfg` has them."""
        return ", ".join(f"--{f}={getattr(cfg, f)}" for f in self.conditions)


def _meets(value, condition) -> bool:
    if isinstance(condition, Not):
        return value != condition.value
    return value in condition if isinstance(condition, tuple) else value == condition


def _words(field: str, condition) -> str:
    if isinstance(condition, Not):
        return f"--{field} other than {condition.value}"
    if condition is True:
        return f"--{field}"
    values = condition if isinstance(condition, tuple) else (condition,)
    return f"--{field} " + " or ".join(map(str, values))


# where the fields of one net, optimizer, schedule or mode act
ON_RESNETF = Where(model="resnetf")
ON_WHITENED = Where(model="whitened_convnet")
ON_MUON = Where(optimizer="muon")
ON_MUON_RESCALE = Where(optimizer="muon", muon_rescale=True)
ON_ONE_CYCLE = Where(schedule="one_cycle")
ON_LOOKAHEAD = Where(lookahead=Not(0.0))
ON_PADDING = Where(pad=Not(0))
ON_GPU_FLIP = Where(backend="gpu", flip=True)
ON_TTA = Where(tta=Not("none"))
ON_TTA_SUBSET = Where(tta=Not("none"), tta_fraction=Not(1.0))
ON_SIX_VIEWS = Where(tta="flip_translate")
ON_HALF_NET = Where(amp=True, amp_dtype=("half", "auto_half"))


RUN = Group("run", "what the command does, and how the run is kept")
DATA = Group("data", "CIFAR-10, the validation split and the loader")
AUGMENTATION = Group(
    "augmentation",
    "training-set augmentation: crop and flip per image (albumentations backend) or batch-wise "
    "(gpu backend); cutout and normalize batch-wise on the device",
)
MODEL = Group("model", "the network")
OPTIMISATION = Group("optimisation", "the optimizer, the loss and weight averaging")
SCHEDULE = Group("schedule", "the LR schedule (One Cycle: torch's OneCycleLR, stepped every batch)")
EVALUATION = Group(
    "evaluation", "what is measured, on which split, and the analysis after training"
)
TUNING = Group("tuning", "Optuna: --tune N trials on the validation split")
TRACKING = Group("tracking", "Weights & Biases and the run folders")
LAUNCH = Group(
    "launch",
    "where the runs of an ablation, --seeds N, a benchmark or a study's workers execute "
    "(submitit: one process per shard, local or a SLURM job array)",
)
HARDWARE = Group("hardware", "device, precision and speed")


@dataclass
class Config:
    # --- run: what the command does, and how the run is kept -----------------------------------
    name: str = RUN("resnetf", result=False)
    """Experiment name: the W&B group and the prefix of the run folder."""
    seed: int = RUN(0, result=False)
    """Seeds Python, NumPy, torch, the data order and the augmentations."""
    seeds: int = RUN(1, result=False)
    """Run the experiment N times (seeds seed..seed+N-1) and report mean +- std; with --tune
    --retrain_best, the study's answer is retrained over N seeds."""
    lr_range_test: bool = RUN(False, result=False)
    """Instead of training, run an LR range test: print a suggested max_lr, save the curve."""
    resume: str | None = RUN(None, result=False)
    """A run folder to continue from its last checkpoint, with the config it was started with
    (only --progress, --workers and --device may differ)."""
    checkpoint: bool = RUN(True, result=False)
    """Write checkpoint.pt (model, optimizer, scheduler, EMA, metrics) after every epoch."""
    save_model: bool = RUN(True, result=False)
    """Save the final weights as model.pt in the run folder."""
    progress: bool = RUN(True, result=False)
    """Show a progress bar while an epoch runs."""
    debug: Literal["fast", "overfit", "profile"] | None = RUN(None, result=False)
    """A quick check instead of a run: fast (a few steps at a constant LR, one evaluation batch,
    analysis and files; W&B off, under runs/debug/), overfit (one batch without augmentation
    until it is learnt, or exit 1), profile (a few steps under torch.profiler: a trace and the
    top operators)."""

    # --- data --------------------------------------------------------------------------------
    data_dir: str = DATA("data", result=False)
    """Folder holding cifar-10-batches-py/ (downloaded there when absent)."""
    download: bool = DATA(True, result=False)
    """Download CIFAR-10 with torchvision when data_dir has no cifar-10-batches-py/."""
    val_size: int = DATA(0)
    """Images held out of the training set (stratified, seeded) as a validation split; 0: none
    (when tuning, 0 means 10% of the training images, at most 5000)."""
    workers: int | None = DATA(None, result=False)
    """DataLoader worker processes; None: one per CPU core, 0: load in the main process."""
    backend: Literal["albumentations", "gpu"] = DATA("albumentations")
    """albumentations: per-image crop/flip in loader workers; gpu: data held on the device and
    augmented batch-wise there."""

    # --- augmentation ------------------------------------------------------------------------
    pad: int = AUGMENTATION(4)
    """Pixels of padding before the random 32x32 crop; 0 turns pad+crop off."""
    pad_mode: Literal["reflect", "constant"] = AUGMENTATION("reflect", acts=ON_PADDING)
    """How the padding is filled: mirrored pixels (reflect) or black (constant)."""
    flip: bool = AUGMENTATION(True)
    """Random horizontal flip with p=0.5."""
    alternating_flip: bool = AUGMENTATION(False, acts=ON_GPU_FLIP)
    """With flip, the alternating flip (gpu backend): each image gets a random flip in epoch 0,
    then all images flip together every odd epoch, so every image is seen both ways in turn."""
    cutout: int = AUGMENTATION(8)
    """Side of the one square hole cut out of each image (Cutout); 0 turns it off."""
    normalize: bool = AUGMENTATION(True)
    """Normalize with the CIFAR-10 per-channel mean and std (train and test)."""
    brightness: float = AUGMENTATION(0.0)
    """Brightness jitter of training images: b ~ U(-brightness, +brightness) added to every
    normalised pixel and channel of an image, one draw per image (the speedrun: 0.1399); 0: off."""
    contrast: float = AUGMENTATION(0.0)
    """Contrast jitter of training images: each normalised image (brightness added) times c ~
    U(1 - contrast, 1 + contrast), one draw per image (the speedrun: 0.1308); 0: off."""

    # --- model -------------------------------------------------------------------------------
    model: Literal["resnetf", "resnet9", "whitened_convnet"] = MODEL("resnetf")
    """resnetf: the course project's net as published; resnet9: the corrected DAWNBench-style
    net; whitened_convnet: airbench94's net (frozen 2x2 whitening stem, 64-256-256), for speed."""
    width: float = MODEL(1.0)
    """Channel multiplier (1.0: 64-128-256-512); small values make CPU runs cheap."""
    dropout: float = MODEL(0.1)
    """Dropout after the third layer (the course project used 0.1)."""
    softmax_head: bool = MODEL(False, acts=ON_RESNETF)
    """End the net with softmax, as the course project did (a defect: the loss expects logits)."""
    bn_momentum: float | None = MODEL(None)
    """BatchNorm's running-statistics momentum in torch's sense (the weight of the new batch);
    None: the net's own (whitened_convnet 0.4, which airbench writes as 0.6; the others 0.1)."""
    head_init_std: float | None = MODEL(None, acts=ON_WHITENED)
    """whitened_convnet: start the head's weights at this std (airbench94_muon: 1); None: torch's
    default init."""
    logit_scale: float | None = MODEL(None, acts=ON_WHITENED)
    """whitened_convnet: multiply the logits by this (airbench94: 1/9; airbench94_muon: 1/256,
    one over the feature width); None: 1/9."""
    stem_bias_init: Literal["zero", "torch"] = MODEL("zero", acts=ON_WHITENED)
    """whitened_convnet: the whitening stem's bias at the start: zero (airbench94: the whitened
    patches as they are) or torch (nn.Conv2d's default U(+-1/sqrt(12)), as airbench94_muon)."""
    stem_bias_epochs: float = MODEL(3, acts=ON_WHITENED)
    """whitened_convnet: epochs during which the whitening stem's bias trains, then it is frozen
    like the stem's weights; a fraction counts ceil(stem_bias_epochs x steps per epoch) steps
    (the speedrun's 0.2 of 32: 7 steps), after which its lr is 0 until the epoch ends."""
    whiten_images: int = MODEL(5000, acts=ON_WHITENED)
    """whitened_convnet: the first N training images whose 2x2 patches set the whitening stem
    (airbench: 5000; the speedrun: 960)."""
    activation: Literal["gelu", "silu", "relu"] | None = MODEL(None, acts=ON_WHITENED)
    """whitened_convnet: the activation of its conv groups (the stem keeps GELU); None: GELU, as
    airbench (the speedrun: silu)."""

    # --- optimisation ------------------------------------------------------------------------
    epochs: float = OPTIMISATION(24)
    """Passes over the training set; a fraction trains the last one partly (9.9: 99% of 10)."""
    batch_size: int = OPTIMISATION(512)
    """Training batch size (the last incomplete batch of an epoch is dropped)."""
    optimizer: Literal["sgd", "muon"] = OPTIMISATION("sgd")
    """sgd: Nesterov SGD for every trained parameter; muon: Muon for the conv filters (4-D
    weights), SGD for the rest (head at max_lr, biases at bn_bias_lr times it)."""
    muon_lr: float = OPTIMISATION(0.24, acts=ON_MUON)
    """Muon's peak lr (the step of an orthogonalised update; no units of a loss)."""
    muon_momentum: float = OPTIMISATION(0.6, acts=ON_MUON)
    """Muon's momentum (Nesterov when --nesterov)."""
    muon_ns_steps: int = OPTIMISATION(3, acts=ON_MUON)
    """Newton-Schulz iterations that orthogonalise Muon's update (airbench94_muon: 3; torch: 5)."""
    muon_rescale: bool = OPTIMISATION(True, acts=ON_MUON)
    """Before a Muon step, rescale each filter bank to Frobenius norm sqrt(out channels): every
    step, or as muon_rescale_interval and muon_rescale_growth space them."""
    muon_rescale_interval: int = OPTIMISATION(1, acts=ON_MUON_RESCALE)
    """With muon_rescale: rescale on Muon step s (1-based) when s - (the last rescaled step, 0 at
    first) >= muon_rescale_interval + floor(muon_rescale_growth x s / total steps); 1 (with
    growth 0): every step (airbench94_muon); the speedrun: 2 and 15, 37 of its 245 steps."""
    muon_rescale_growth: float = OPTIMISATION(0.0, acts=ON_MUON_RESCALE)
    """How much the gap between two rescaled Muon steps grows over the run (see
    muon_rescale_interval); 0: a fixed gap."""
    muon_weight_decay: float = OPTIMISATION(0.0, acts=ON_MUON)
    """After every Muon step, each filter bank times (1 - lr_t x muon_weight_decay), lr_t Muon's
    lr at that step (the speedrun: 1.6002e-3); 0: none (airbench94_muon)."""
    muon_ns_coefficients: Literal["muon", "speedrun"] = OPTIMISATION("muon", acts=ON_MUON)
    """The quintic Newton-Schulz coefficients (a, b, c): muon (3.4445, -4.7750, 2.0315), Muon's
    and torch's; speedrun (3.4576, -4.7391, 2.0843), the later CIFAR-10 speedrun's."""
    muon_ns_dtype: Literal["bf16", "fp16", "fp32"] = OPTIMISATION("bf16", acts=ON_MUON)
    """The precision of the Newton-Schulz iterations (Muon's: bf16; the speedrun: fp16)."""
    momentum: float = OPTIMISATION(0.9)
    """SGD momentum, used as is when cycle_momentum is off."""
    nesterov: bool = OPTIMISATION(True)
    """Nesterov momentum."""
    weight_decay: float = OPTIMISATION(5e-4)
    """L2 weight decay on every trained parameter (the course project had none)."""
    decoupled: bool = OPTIMISATION(False)
    """max_lr and weight_decay in airbench's decoupled form, per 1024 examples of a summed loss:
    SGD's lr = max_lr * batch_size / (1024 * (1 + 1/(1 - momentum))), and a decay step of
    weight_decay * batch_size / (1024 * (1 + 1/(1 - momentum))) whatever the lr."""
    bn_bias_lr: float = OPTIMISATION(1.0)
    """LR multiplier of the BatchNorm biases (airbench94: 64); with decoupled, their absolute
    decay step stays that of the other weights."""
    label_smoothing: float = OPTIMISATION(0.0)
    """Label smoothing of the training loss."""
    ema: float = OPTIMISATION(0.0)
    """Decay of an exponential moving average of the weights, updated every step and used for
    evaluation; 0 turns it off."""
    lookahead: float = OPTIMISATION(0.0)
    """Lookahead weight averaging (airbench94: 0.95): every lookahead_every steps the weights are
    pulled to a running average with decay lookahead**every * (step/total)**3 and copied back;
    at the end the weights become the average. 0 turns it off."""
    lookahead_every: int = OPTIMISATION(5, acts=ON_LOOKAHEAD)
    """Steps between two lookahead updates."""

    # --- schedule (stepped every batch) ----------------------------------------------------------
    schedule: Literal["one_cycle", "linear_decay"] = SCHEDULE("one_cycle")
    """one_cycle: torch's OneCycleLR with the fields below; linear_decay: every lr from its peak
    straight down to 0 from the first step (airbench94_muon), and the parameters a net trains
    for its first epochs only (the whitening bias) down to 0 over those epochs."""
    max_lr: float = SCHEDULE(0.1552)
    """Peak learning rate (the course project's LR-finder pick)."""
    pct_start: float = SCHEDULE(0.2, acts=ON_ONE_CYCLE)
    """Fraction of the steps spent raising the LR."""
    div_factor: float = SCHEDULE(10.0, acts=ON_ONE_CYCLE)
    """Initial LR = max_lr / div_factor."""
    final_div_factor: float = SCHEDULE(100.0, acts=ON_ONE_CYCLE)
    """Final LR = initial LR / final_div_factor."""
    anneal_strategy: Literal["linear", "cos"] = SCHEDULE("linear", acts=ON_ONE_CYCLE)
    """Shape of the LR ramps."""
    three_phase: bool = SCHEDULE(False, acts=ON_ONE_CYCLE)
    """Add a third phase that anneals to the final LR (OneCycleLR's three_phase)."""
    cycle_momentum: bool = SCHEDULE(False, acts=ON_ONE_CYCLE)
    """Cycle momentum inversely to the LR between 0.85 and 0.95 (OneCycleLR's default)."""

    # --- evaluation --------------------------------------------------------------------------
    tta: Literal["none", "flip", "flip_translate"] = EVALUATION("none")
    """Test-time augmentation: none; flip (mean logits of each image and its mirror);
    flip_translate (half that, half the same for the image shifted by 1 px up-left and
    down-right, reflect-padded: 6 forward passes)."""
    tta_fraction: float = EVALUATION(1.0, acts=ON_TTA)
    """With --tta: the plain pass over every image, then the TTA views only for this fraction of
    the images the net is least sure of (lowest top probability), per tta_scope."""
    tta_scope: Literal["batch", "split"] = EVALUATION("batch", acts=ON_TTA_SUBSET)
    """Where --tta_fraction picks its least sure images: in each evaluation batch, or over the
    whole split (the speedrun: the 2,500 least sure of the 10,000 test images)."""
    tta_weights: Literal["airbench", "uniform"] = EVALUATION("airbench", acts=ON_SIX_VIEWS)
    """How flip_translate weighs its 6 views: airbench (1/4 the image and its mirror, 1/8 each
    translated view) or uniform (1/6 each, the speedrun)."""
    eval_every: int = EVALUATION(1)
    """Evaluate every N epochs (the last epoch always); 0: only after the last epoch."""
    use_test: bool = EVALUATION(True)
    """Evaluate on the test split and analyse its errors; tuning trials turn it off and see
    only the validation split."""
    analysis: bool = EVALUATION(True, result=False)
    """After training: misclassified grid, confusion matrix, per-class accuracy and Grad-CAM
    overlays, as PNG/CSV in the run folder and in W&B."""
    gradcam_images: int = EVALUATION(4, result=False)
    """Misclassified images shown with Grad-CAM maps; 0: no Grad-CAM."""

    # --- tuning (Optuna) -----------------------------------------------------------------------
    tune: int = TUNING(0, result=False)
    """Run an Optuna study until it has N finished trials, searching the sweep file's parameters
    on the validation split; 0: train once."""
    sweep: str = TUNING("sweeps/lr.yaml", result=False)
    """The experiment's W&B sweep file: its `parameters` are the search space of --tune and of
    `wandb sweep` alike (relative paths: from the working directory, else from the repo)."""
    study: str | None = TUNING(None, result=False)
    """Optuna study name; None: the experiment's name."""
    storage: str | None = TUNING(None, result=False)
    """Optuna storage: a journal file (PATH.log or journal:PATH; the processes of one machine
    share it, no server) or a database URL (postgresql://user:pw@host/db across machines,
    sqlite:///path.db); None: a SQLite file runs/tune/<study>.db. Workers pointed at one
    storage share the study."""
    pruner: Literal["auto", "median", "hyperband", "halving", "wilcoxon", "none"] = TUNING(
        "auto", result=False
    )
    """Stop unpromising trials early. median, hyperband: one-seed trials, on each epoch's
    validation accuracy. halving (successive halving with seeds as the resource: a trial's mean
    over its first k seeds against the others' over the same seeds), wilcoxon (Optuna's paired
    test against the best trial, per seed; K >= 5): --trial_seeds K > 1. auto: halving with
    K > 1, median with one seed, none where nothing can prune (several objectives, no per-epoch
    evaluation). A study with --min_val_acc prunes by the accuracy bound and compute instead."""
    prune_min_seeds: int = TUNING(1, result=False)
    """halving: seeds every trial trains before it can be pruned (the first rung)."""
    prune_reduction: int = TUNING(2, result=False)
    """halving: at each rung (min_seeds x reduction^r seeds) only the best 1/reduction go on."""
    sampler: Literal["tpe", "gp", "random"] = TUNING("tpe", result=False)
    """Optuna's sampler, seeded by --seed: tpe (TPESampler, constant liar for parallel workers),
    gp (GPSampler, its noise learned: seeds make the objective noisy), random."""
    min_val_acc: float | None = TUNING(None, result=False)
    """A constrained study: minimise --objectives (pflop or train_seconds, alone) subject to the
    trial's mean validation accuracy over its seeds >= this (a fraction), through Optuna's
    constraints; the answer is the cheapest feasible trial."""
    trial_analysis: bool = TUNING(False, result=False)
    """Tuning trials draw the analysis figures too (of their validation split); off: a trial does
    only the work its objective needs. --retrain_best analyses as --analysis says."""
    heartbeat: int = TUNING(60, result=False)
    """Seconds between a running trial's heartbeats; a trial silent for 2x this (a killed
    worker) is marked failed and the study goes on."""
    retrain_best: bool = TUNING(False, result=False)
    """After the study, train once with the best parameters on the whole training set and
    report test accuracy (with several objectives: the front trial --target_acc picks)."""
    trial_seeds: int = TUNING(1, result=False)
    """Seeds per trial (seed..seed+K-1): the trial's value is their mean, so the search does not
    chase one seed's luck; each seed is a run, and each seed's accuracy is a step the pruner
    reads (step k: k seeds done)."""
    objectives: str = TUNING("val_acc", result=False)
    """What a study optimises, comma-separated: val_acc (maximised; always one of them),
    train_seconds and pflop (minimised; pflop: the run's counted compute, as bench --flops
    counts it, the same on every machine). Two or more: a multi-objective study (Pareto front,
    no pruning)."""
    target_acc: float | None = TUNING(None, result=False)
    """The accuracy aimed at (a fraction: 0.9). With --seeds N: the one-sided t-test that the
    mean test accuracy reaches it (p, and the seeds the spread needs to show it); with several
    objectives, --retrain_best retrains the cheapest front trial whose validation accuracy
    reaches it (None: the most accurate front trial)."""

    # --- tracking ----------------------------------------------------------------------------
    wandb_mode: Literal["online", "offline", "disabled"] | None = TRACKING(None, result=False)
    """W&B mode; None: online when logged in to W&B, else offline (sync later with `wandb sync`)."""
    wandb_project: str = TRACKING("resnetf", result=False)
    """W&B project."""
    wandb_entity: str | None = TRACKING(None, result=False)
    """W&B entity (user or team); None: your default."""
    wandb_group: str | None = TRACKING(None, result=False)
    """W&B group; None: the experiment's name (a study groups its trials under its own name)."""
    runs_dir: str = TRACKING("runs", result=False)
    """Where run folders (config, metrics, summary, model, W&B files) are written."""

    # --- launch (submitit) ---------------------------------------------------------------------
    launcher: Literal["inline", "local", "slurm", "pool"] = LAUNCH("inline", result=False)
    """inline: every run in this process, one after another; local: --jobs processes on this
    machine (submitit), each pinned to its own GPU(s); slurm: a SLURM job array of --jobs
    tasks; pool: --jobs plain processes on this machine, no submitit (tests, laptops)."""
    jobs: int = LAUNCH(1, result=False)
    """Tasks the runs are dealt into (each task gets every config the seeds allow); each loads
    the data once and runs its runs one after another. More than the runs: fewer tasks. With
    --tune: study workers."""
    gpus_per_job: int | None = LAUNCH(None, result=False)
    """GPUs per task; None: on SLURM 1, on this machine 1 where it has a GPU, else 0."""
    slurm_partition: str | None = LAUNCH(None, result=False)
    """SLURM partition; None: the cluster's default."""
    slurm_time_min: int = LAUNCH(60, result=False)
    """Time limit of each SLURM task in minutes; a task near it is requeued and resumes where
    it stopped."""
    task_time_min: int | None = LAUNCH(None, result=False)
    """Time limit of each task in minutes, on any launcher; None: --slurm_time_min on SLURM, no
    limit on this machine."""
    slurm_array_parallelism: int | None = LAUNCH(None, result=False)
    """At most this many array tasks at once; None: all of them."""
    slurm_param: tuple[str, ...] = LAUNCH((), result=False)
    """Other SLURM parameters as KEY=VALUE (submitit's slurm_additional_parameters:
    --slurm_param mem=16G account=mine)."""
    launch_dir: str | None = LAUNCH(None, result=False)
    """The launch's folder (submitit's pickles, logs, launch.json); None: the folder of an
    earlier launch of the same runs, else runs/launch/<name>_<work id>."""

    # --- hardware ----------------------------------------------------------------------------
    device: str = HARDWARE("auto", result=False)
    """auto (cuda when available, else cpu), cpu, cuda or cuda:N."""
    amp: bool = HARDWARE(True)
    """Mixed precision (autocast) on CUDA, in amp_dtype."""
    amp_dtype: Literal["auto", "bf16", "fp16", "half", "auto_half"] = HARDWARE("auto")
    """auto: bf16 autocast where the GPU computes it natively (compute capability >= 8.0), else
    fp16 autocast with a GradScaler (T4, V100); none on the CPU. bf16/fp16 force that autocast
    type (on the CPU too, where torch supports it). half: airbench94's way, the net itself in
    fp16 (BatchNorm fp32), the batch's losses summed instead of a GradScaler; auto_half: half
    on CUDA (airbench94_muon's precision), none on the CPU, where fp16 convolutions are slow."""
    half_batchnorm: bool = HARDWARE(False, acts=ON_HALF_NET)
    """With --amp_dtype=half (or auto_half on CUDA): BatchNorm in fp16 too, its statistics and
    affine parameters included (the speedrun's whole-net .half()); off: BatchNorm fp32."""
    channels_last: bool = HARDWARE(True)
    """channels_last memory format on CUDA (faster convolutions on tensor cores)."""
    deterministic: bool = HARDWARE(False, result=False)
    """PyTorch's deterministic algorithms and no cudnn autotuning: identical runs on CUDA too,
    at some cost in speed."""
    compile: bool = HARDWARE(False, result=False)
    """torch.compile the model; compile time is reported apart from training time."""

    def validate(self) -> Config:
        """Raise ConfigError naming the first field with a bad value; return self. In order: a
        value outside its field's choices, a field set where it does nothing (its `acts`
        declaration), then each topic's ranges and combinations."""
        for name, choices in _choice_fields().items():
            if getattr(self, name) not in choices:
                raise ConfigError(
                    f"{name}: must be one of {', '.join(map(str, choices))} "
                    f"(got {getattr(self, name)!r})"
                )
        for name in self.idle():
            where = acts_where()[name]
            raise ConfigError(
                f"{name}: acts only with {where} (here {where.here(self)}): set to "
                f"{getattr(self, name)!r}, it would do nothing"
            )
        for topic in self._checks():
            for field, bad, why in topic:
                if bad:
                    raise ConfigError(f"{field}: {why}")
        return self

    def idle(self) -> list[str]:
        """The fields set away from their defaults where their declaration says they do
        nothing (Muon's on an SGD run, the whitening on ResNet-9)."""
        defaults = field_defaults()
        return [
            name
            for name, where in acts_where().items()
            if getattr(self, name) != defaults[name] and not where.holds(self)
        ]

    def settled(self, keep=()) -> Config:
        """This config with its idle fields, but `keep`, back at their defaults. One pass is
        enough: a Where that reads a field with a Where of its own repeats that one's
        conditions (tta_scope's names --tta too), so no reset can idle a field that acted."""
        defaults = field_defaults()
        return self.replace(**{n: defaults[n] for n in self.idle() if n not in keep})

    def switched(self, **changes) -> Config:
        """This config with `changes`: fields they leave idle (Muon's under --optimizer sgd)
        go back to their defaults; fields they set, and fields idle here before, stay for
        validate() to refuse."""
        return self.replace(**changes).settled(keep=set(changes) | set(self.idle()))

    def _checks(self):
        """Each topic's (field, bad, why) rows, in --help's group order."""
        return [
            self._run_checks(),
            self._data_checks(),
            self._model_checks(),
            self._optimisation_checks(),
            self._muon_checks(),
            self._schedule_checks(),
            self._evaluation_checks(),
            self._study_checks(),
            self._objective_checks(),
            self._pruner_checks(),
            self._launch_checks(),
            self._hardware_checks(),
        ]

    def _range(self, field: str, ok: bool, rule: str):
        """A (field, bad, why) row of a range: NaN compares false everywhere, so `ok` is False
        for it already; an infinity is refused here."""
        value = getattr(self, field)
        infinite = isinstance(value, float) and not math.isfinite(value)
        return field, not ok or infinite, f"{rule} (got {value!r})"

    def _run_checks(self):
        """What the command does: one run, N seeds, a study, an LR range test, a debug mode."""
        return [
            self._range("seeds", self.seeds >= 1, "must be >= 1"),
            self._range("tune", self.tune >= 0, "must be >= 0"),
            (
                "seeds",
                self.tune > 0 and self.seeds > 1 and not self.retrain_best,
                "--tune runs a study; it cannot be repeated over seeds (use one of them, or "
                "--retrain_best --seeds N to retrain the study's answer over N seeds)",
            ),
            (
                "lr_range_test",
                self.lr_range_test and (self.tune > 0 or self.seeds > 1),
                "the LR range test trains nothing; it cannot be combined with --tune or --seeds",
            ),
            (
                "debug",
                self.debug is not None
                and (
                    self.tune > 0 or self.seeds > 1 or self.lr_range_test or self.resume is not None
                ),
                "a debug mode is a quick check of one run: not with --tune, --seeds, "
                "--lr_range_test or --resume",
            ),
        ]

    def _data_checks(self):
        """The data, the loader and the augmentations."""
        return [
            self._range("val_size", 0 <= self.val_size < 50_000, "must be in [0, 50000)"),
            self._range("workers", self.workers is None or self.workers >= 0, "must be >= 0"),
            self._range("pad", 0 <= self.pad <= 16, "must be in [0, 16]"),
            self._range("cutout", 0 <= self.cutout <= 32, "must be in [0, 32]"),
            self._range("brightness", 0 <= self.brightness <= 1, "must be in [0, 1]"),
            self._range("contrast", 0 <= self.contrast < 1, "must be in [0, 1)"),
        ]

    def _model_checks(self):
        return [
            self._range("width", self.width > 0, "must be > 0"),
            self._range("dropout", 0 <= self.dropout < 1, "must be in [0, 1)"),
            self._range(
                "bn_momentum",
                self.bn_momentum is None or 0 <= self.bn_momentum <= 1,
                "must be in [0, 1]",
            ),
            self._range(
                "head_init_std", self.head_init_std is None or self.head_init_std > 0, "must be > 0"
            ),
            self._range(
                "logit_scale", self.logit_scale is None or self.logit_scale > 0, "must be > 0"
            ),
            self._range("stem_bias_epochs", self.stem_bias_epochs >= 0, "must be >= 0"),
            self._range("whiten_images", self.whiten_images >= 1, "must be >= 1"),
        ]

    def _optimisation_checks(self):
        """The optimizer's and the loss's values, and weight averaging (EMA, lookahead)."""
        return [
            self._range("epochs", self.epochs > 0, "must be > 0"),
            self._range("batch_size", self.batch_size >= 1, "must be >= 1"),
            self._range("momentum", 0 <= self.momentum < 1, "must be in [0, 1)"),
            self._range("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            self._range("label_smoothing", 0 <= self.label_smoothing < 1, "must be in [0, 1)"),
            self._range("bn_bias_lr", self.bn_bias_lr > 0, "must be > 0"),
            self._range("ema", 0 <= self.ema < 1, "must be in [0, 1)"),
            (
                "ema",
                self.ema != 0 and self.amp_dtype in ("half", "auto_half"),
                "with --amp_dtype=half the average would be an fp16 net, and an update of "
                "(1 - ema) x (w - average) is below fp16's spacing for most weights: use "
                "--amp_dtype=bf16 or fp16 (autocast over fp32 weights), or no --ema",
            ),
            self._range("lookahead", 0 <= self.lookahead < 1, "must be in [0, 1)"),
            self._range("lookahead_every", self.lookahead_every >= 1, "must be >= 1"),
            (
                "nesterov",
                self.nesterov and self.momentum == 0 and not self.cycle_momentum,
                "needs momentum > 0 (got momentum=0)",
            ),
            (
                "decoupled",
                self.decoupled and self.cycle_momentum,
                "the decoupled form is defined for a fixed momentum (turn cycle_momentum off)",
            ),
        ]

    def _muon_checks(self):
        return [
            self._range("muon_lr", self.muon_lr > 0, "must be > 0"),
            self._range("muon_momentum", 0 <= self.muon_momentum < 1, "must be in [0, 1)"),
            self._range("muon_ns_steps", 1 <= self.muon_ns_steps <= 20, "must be in [1, 20]"),
            self._range("muon_rescale_interval", self.muon_rescale_interval >= 1, "must be >= 1"),
            self._range("muon_rescale_growth", self.muon_rescale_growth >= 0, "must be >= 0"),
            self._range("muon_weight_decay", self.muon_weight_decay >= 0, "must be >= 0"),
            (
                "optimizer",
                self.optimizer == "muon" and self.cycle_momentum,
                "Muon's momentum is fixed: turn cycle_momentum off",
            ),
        ]

    def _schedule_checks(self):
        return [
            self._range("max_lr", self.max_lr > 0, "must be > 0"),
            self._range("pct_start", 0 < self.pct_start < 1, "must be in (0, 1)"),
            self._range("div_factor", self.div_factor > 0, "must be > 0"),
            self._range("final_div_factor", self.final_div_factor > 0, "must be > 0"),
        ]

    def _evaluation_checks(self):
        return [
            self._range("tta_fraction", 0 < self.tta_fraction <= 1, "must be in (0, 1]"),
            self._range("eval_every", self.eval_every >= 0, "must be >= 0"),
            self._range("gradcam_images", 0 <= self.gradcam_images <= 16, "must be in [0, 16]"),
        ]

    def _hardware_checks(self):
        return [
            self._range(
                "device",
                self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
                "must be auto, cpu, cuda or cuda:N",
            ),
        ]

    def _objective_checks(self):
        """What a study optimises, its accuracy floor and the accuracy aimed at."""
        objectives = self.objective_list
        twice = sorted({o for o in objectives if objectives.count(o) > 1})
        return [
            self._range(
                "target_acc",
                self.target_acc is None or 0 < self.target_acc <= 1,
                "must be in (0, 1] (a fraction: 0.9 for 90%)",
            ),
            self._range("objectives", not twice, f"names {', '.join(twice)} twice"),
            self._range(
                "objectives",
                set(objectives) <= set(OBJECTIVES)
                and ("val_acc" in objectives or self.min_val_acc is not None),
                f"must be a comma-separated list of {', '.join(OBJECTIVES)} that includes val_acc "
                f"(or one cost, pflop or train_seconds, with --min_val_acc)",
            ),
            self._range(
                "min_val_acc",
                self.min_val_acc is None
                or (0 < self.min_val_acc <= 1 and objectives in (["pflop"], ["train_seconds"])),
                "a constrained study minimises one cost under the accuracy floor: a fraction in "
                "(0, 1] with --objectives pflop (or train_seconds) alone",
            ),
            self._range(
                "min_val_acc",
                self.min_val_acc is None or self.tune > 0,
                "the accuracy floor of a study: it needs --tune N",
            ),
        ]

    def _launch_checks(self):
        idle_launch = self.unused("launch", self.launcher != "inline", skip=("launcher",))
        return [
            *(
                [
                    (
                        idle_launch,
                        True,
                        "says where a launch's tasks run, and does nothing without --launcher "
                        "local, slurm or pool",
                    )
                ]
                if idle_launch
                else []
            ),
            ("jobs", self.jobs < 1, f"must be >= 1 (got {self.jobs})"),
            (
                "gpus_per_job",
                self.gpus_per_job is not None and self.gpus_per_job < 0,
                f"must be >= 0 (got {self.gpus_per_job})",
            ),
            ("slurm_time_min", self.slurm_time_min < 1, "must be >= 1 minute"),
            (
                "task_time_min",
                self.task_time_min is not None and self.task_time_min < 1,
                "must be >= 1 minute",
            ),
            (
                "slurm_array_parallelism",
                self.slurm_array_parallelism is not None and self.slurm_array_parallelism < 1,
                "must be >= 1",
            ),
            (
                "launcher",
                self.launcher != "inline" and (self.debug is not None or self.lr_range_test),
                "a debug mode or an LR range test is one quick run in this process: "
                "not with --launcher",
            ),
            (
                "launcher",
                self.launcher != "inline" and self.resume is not None,
                "--resume continues one run here; a launch resumes its own runs on a rerun",
            ),
        ]

    def _study_checks(self):
        """A study's settings: what needs --tune, and their ranges."""
        # sweep is not among them: an experiment names its search space whether it tunes or not
        idle_tuning = self.unused(
            "tuning",
            self.tune > 0,
            skip=("sweep", "retrain_best", "trial_analysis", "target_acc", "trial_seeds")
            + ("objectives", "min_val_acc", "tune"),
        )
        return [
            self._range("heartbeat", self.heartbeat >= 1, "must be >= 1 second"),
            self._range("trial_seeds", self.trial_seeds >= 1, "must be >= 1"),
            *(
                [(idle_tuning, True, "is a study's setting, and does nothing without --tune N")]
                if idle_tuning
                else []
            ),
            (
                "retrain_best",
                self.retrain_best and self.tune == 0,
                "retrains the best trial of a study: it needs --tune N",
            ),
            (
                "trial_analysis",
                self.trial_analysis and self.tune == 0,
                "draws the figures of tuning trials: it needs --tune N",
            ),
            (
                "target_acc",
                self.target_acc is not None and not self.retrain_best and self.seeds < 2,
                "the accuracy aimed at is tested over --seeds N (N >= 2) or picks the front "
                "trial --retrain_best retrains: it needs one of them",
            ),
            (
                "trial_seeds",
                self.trial_seeds > 1 and self.tune == 0,
                "seeds per tuning trial: it needs --tune N (for seeds of one run: --seeds N)",
            ),
            (
                "objectives",
                self.objectives != "val_acc" and self.tune == 0,
                "what a study optimises: it needs --tune N",
            ),
        ]

    def _pruner_checks(self):
        """Which pruner fits which study: per epoch for one-seed trials, per seed for several,
        none with several objectives (Optuna cannot), the bound with --min_val_acc."""
        chosen = self.pruner not in ("auto", "none") and self.tune > 0
        return [
            (
                "pruner",
                chosen and len(self.objective_list) > 1,
                "Optuna cannot prune a study with several objectives: use --pruner=none",
            ),
            (
                "pruner",
                chosen and self.min_val_acc is not None,
                "a study with --min_val_acc prunes by its accuracy bound and compute: use "
                "--pruner=auto (or none)",
            ),
            (
                "pruner",
                chosen and self.pruner in ("median", "hyperband") and self.trial_seeds > 1,
                "median and hyperband prune on one run's epochs; a trial's seeds run one after "
                "another: use --pruner=halving or wilcoxon with --trial_seeds > 1",
            ),
            (
                "pruner",
                chosen and self.pruner in ("halving", "wilcoxon") and self.trial_seeds == 1,
                "halving and wilcoxon prune over a trial's seeds: they need --trial_seeds K > 1",
            ),
            (
                "pruner",
                chosen and self.pruner == "wilcoxon" and 1 < self.trial_seeds < 5,
                "Wilcoxon's one-sided p cannot go below 0.125 with 3 paired seeds (0.0625 with "
                "4): use --trial_seeds >= 5, or --pruner=halving",
            ),
            (
                "eval_every",
                chosen and self.pruner in ("median", "hyperband") and self.eval_every == 0,
                "the pruner needs per-epoch validation accuracy: use eval_every >= 1 or "
                "--pruner=none when tuning",
            ),
            (
                "prune_min_seeds",
                self.prune_min_seeds < 1
                or (self.trial_seeds > 1 and self.prune_min_seeds >= self.trial_seeds),
                f"must be >= 1 and below --trial_seeds ({self.trial_seeds}) (got "
                f"{self.prune_min_seeds})",
            ),
            ("prune_reduction", self.prune_reduction < 2, "must be >= 2"),
        ]

    @property
    def pruner_kind(self) -> str:
        """The pruner a study uses: --pruner, with auto resolved for this study."""
        if self.pruner != "auto":
            return self.pruner
        if len(self.objective_list) > 1:
            return "none"
        if self.min_val_acc is not None:
            return "bound"
        if self.trial_seeds > 1:
            return "halving"
        return "median" if self.eval_every > 0 else "none"

    @property
    def objective_list(self) -> list[str]:
        return [o.strip() for o in self.objectives.split(",") if o.strip()]

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)

    def here(self) -> Config:
        """This config as the one process that runs it sees it (a launch's task, a study's
        worker): where tasks run is said and done, every launch field at its default."""
        defaults = field_defaults()
        return self.replace(**{n: defaults[n] for n in group_fields("launch")})

    def untuned(self, keep: tuple[str, ...] = ()) -> Config:
        """This config as one run of a study (a trial, the retrain) takes it: every tuning field
        at its default but `keep`."""
        defaults = field_defaults()
        return self.replace(**{n: defaults[n] for n in group_fields("tuning") if n not in keep})

    def unused(self, group: str, used: bool, skip: tuple[str, ...] = ()) -> str | None:
        """The first field of `group` set away from its default where the group does nothing
        (`used` False), or None."""
        if used:
            return None
        defaults = field_defaults()
        return next(
            (n for n in group_fields(group) if n not in skip and getattr(self, n) != defaults[n]),
            None,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- what each field is, read from its declaration ----------------------------------------------


def declarations() -> dict:
    """Field -> (group, changes a result), from each field's declaration; a field declared
    without a group is an error here (and in the test that calls this)."""
    out = {}
    for f in dataclasses.fields(Config):
        if "group" not in f.metadata:
            raise TypeError(f"Config.{f.name} has no group: declare it as `= GROUP(default)`")
        out[f.name] = (f.metadata["group"], f.metadata["result"])
    return out


def acts_where() -> dict:
    """Field -> where it acts (its `acts=` declaration), for the fields that declare one."""
    return {
        f.name: f.metadata["acts"] for f in dataclasses.fields(Config) if f.metadata.get("acts")
    }


def groups() -> dict:
    """--help's groups: name -> (description, fields in declaration order)."""
    grouped = {g.name: (g.description, []) for g in _GROUPS}
    for name, (group, _) in declarations().items():
        grouped[group][1].append(name)
    return grouped


def result_fields() -> list[str]:
    """The fields that change what a run computes."""
    return [name for name, (_, result) in declarations().items() if result]


_GROUPS = (
    RUN,
    DATA,
    AUGMENTATION,
    MODEL,
    OPTIMISATION,
    SCHEDULE,
    EVALUATION,
    TUNING,
    TRACKING,
    LAUNCH,
    HARDWARE,
)


def config_hash(cfg: Config) -> str:
    """A short hash of the fields that change what a run computes (result_fields()), act on
    this run (Config.idle) and differ from Config's defaults: equal for the seeds of one
    config, different for an ablation, and unchanged when a later version adds a field whose
    default does what the code did before (the runs an ablation finished are still found on
    its rerun)."""
    import hashlib
    import json

    values, defaults, idle = cfg.to_dict(), field_defaults(), set(cfg.idle())
    fields = {k: values[k] for k in result_fields() if values[k] != defaults[k] and k not in idle}
    return hashlib.blake2b(
        json.dumps(fields, sort_keys=True, default=str).encode(), digest_size=4
    ).hexdigest()


def field_defaults() -> dict:
    """Field -> Config's default for it."""
    return {f.name: f.default for f in dataclasses.fields(Config)}


def group_fields(group: str) -> list[str]:
    """The fields declared in a group, in declaration order."""
    return [name for name, (g, _) in declarations().items() if g == group]


def _hints() -> dict:
    return typing.get_type_hints(Config)


def _options(hint) -> tuple:
    """The types a hint allows: X for X, (X, None) for X | None and Optional[X]."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return typing.get_args(hint) if union else (hint,)


def _choice_fields() -> dict:
    """Field -> allowed values, for every field typed Literal[...] or Optional[Literal[...]]."""
    choices = {}
    for name, hint in _hints().items():
        args = _options(hint)
        literals = [a for a in args if typing.get_origin(a) is Literal]
        if literals:
            choices[name] = (*typing.get_args(literals[0]), *([None] if type(None) in args else []))
    return choices


def coerce(name: str, text: str):
    """A field's value from its text, as its type reads it (`none` for an optional field,
    true/false for a flag, a Literal's choices); a ConfigError naming the field otherwise."""
    hint = _hints().get(name)
    if hint is None:
        raise ConfigError(f"{name}: no such Config field")
    options = _options(hint)
    if text.lower() == "none" and type(None) in options:
        return None
    for option in options:
        if typing.get_origin(option) is Literal and text in typing.get_args(option):
            return text
        if option is bool and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if option in (int, float) and option is not bool:
            try:
                value = float(text)
            except ValueError:
                continue
            if option is float:
                return value
            if value.is_integer():
                return int(value)
        if option is str:
            return text
    raise ConfigError(f"{name}: {text!r} is not {_type_name(hint)}")


def check_value(name: str, value) -> None:
    """A ConfigError naming the field unless `value` (from a sweep file, say) fits its type and
    choices: 7.5 for an integer field, a string for a number, a value outside a Literal's."""
    hint = _hints().get(name)
    if hint is None:
        raise ConfigError(f"{name}: no such Config field")
    for option in _options(hint):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if (
            (option is type(None) and value is None)
            or (typing.get_origin(option) is Literal and value in typing.get_args(option))
            or (option is bool and isinstance(value, bool))
            or (option is int and number and float(value).is_integer())
            or (option is float and number)
            or (option is str and isinstance(value, str))
        ):
            return
    raise ConfigError(f"{name}: {value!r} is not {_type_name(hint)}")


def _type_name(hint) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    if len(_options(hint)) > 1:
        return " or ".join(_type_name(a) for a in _options(hint))
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return "none" if hint is type(None) else names.get(hint, str(hint))


def field_docs() -> dict:
    """Field -> the docstring under it in Config's source, for --help."""
    tree = ast.parse(inspect.getsource(Config))
    body, docs = tree.body[0].body, {}
    for node, after in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
        ):
            docs[node.target.id] = inspect.cleandoc(after.value.value).replace("\n", " ")
    return docs


def _cli_class(defaults: Config):
    """A dataclass of one dataclass per group, for tyro: nested for --help's boxes, with
    OmitArgPrefixes so that every flag keeps its flat name (--max_lr, not --schedule.max_lr)."""
    import tyro

    hints, docs, values = _hints(), field_docs(), defaults.to_dict()
    outer = []
    for group, (description, fields) in groups().items():
        cls = dataclasses.make_dataclass(
            group,
            [
                (
                    f,
                    typing.Annotated[hints[f], tyro.conf.arg(help=docs.get(f, ""))],
                    dataclasses.field(default=values[f]),
                )
                for f in fields
            ],
        )
        cls.__doc__ = description
        outer.append(
            (
                group,
                typing.Annotated[cls, tyro.conf.OmitArgPrefixes],
                dataclasses.field(default_factory=cls),
            )
        )
    return dataclasses.make_dataclass("Config", outer)


def agent_style(args: Sequence[str]) -> list[str]:
    """W&B's agent writes `--flag=True/False` for booleans and may send `--batch_size=512.0`
    for integers; turn them into the flags tyro knows (`--flag` / `--no_flag`, `512`)."""
    hints, out = _hints(), []
    for arg in args:
        name, sep, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        key = name.replace("-", "_")
        if sep and hints.get(key) is bool and value.lower() in ("true", "false"):
            arg = f"--{key}" if value.lower() == "true" else f"--no_{key}"
        elif sep and hints.get(key) in (int, int | None) and _integral(value):
            arg = f"--{name}={int(float(value))}"
        out.append(arg)
    return out


def _integral(text: str) -> bool:
    try:
        return float(text).is_integer()
    except ValueError:
        return False


def parse(defaults: Config, args: Sequence[str] | None = None, description: str = "") -> Config:
    """Command line -> validated Config. Any field can be overridden as --field=value or
    --field value; a bad value exits with status 2 and a message naming the field."""
    import tyro  # imported here: the package must import without the CLI stack

    args = agent_style(sys.argv[1:] if args is None else args)
    nested = tyro.cli(
        _cli_class(defaults), args=args, description=description or None, use_underscores=True
    )
    cfg = Config(**{k: v for group in groups() for k, v in vars(getattr(nested, group)).items()})
    changed = {k: v for k, v in cfg.to_dict().items() if v != getattr(defaults, k)}
    # what the flags switch off goes back to its default; what they set must act
    cfg = defaults.switched(**changed)
    if under_sweep_agent() and (dropped := [n for n in cfg.idle() if n in changed]):
        # a W&B sweep has no conditional parameters: searching optimizer and muon_lr together
        # sets muon_lr on its SGD runs too, where it does nothing; the run goes on without it
        print(f"note: {', '.join(dropped)} left at default: idle on this run", file=sys.stderr)
        cfg = cfg.settled(keep=set(defaults.idle()))
    try:
        return cfg.validate()
    except ConfigError as e:
        print(f"error: --{e}", file=sys.stderr)
        raise SystemExit(2) from None


def under_sweep_agent() -> bool:
    """W&B's agent starts each sweep run with these two set."""
    import os

    return bool(os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID"))


def load_experiment(path) -> Config:
    """The CONFIG of an experiment file (experiments/NAME.py), without running it."""
    import importlib.util
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no experiment file {path}")
    # its neighbours import as they do under `python FILE` (lr_range_test.py: from oc_24ep ...)
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CONFIG
