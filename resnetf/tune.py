"""Optuna around `run(cfg)`: tune max_lr, pct_start and dropout on the validation split.

    python experiments/oc_24ep.py --tune 30 [--storage URL --study NAME --retrain_best]

`--tune N` runs trials until the study holds N finished (complete or pruned) trials, so the same
command run again resumes the study, and the same command on several processes or machines
against one storage URL shares it. The study records the settings that make its trials
comparable (experiment, epochs, width, batch size, validation split, data) and refuses a worker
whose settings differ. Trials report validation accuracy each epoch to the pruner and never
evaluate on the test split; a trial that fails (a NaN loss, any error) fails alone, with its
reason stored on it, and the study goes on; a worker killed mid-trial stops sending heartbeats
and its trial is marked failed by the next worker. The test split is looked at only by
`--retrain_best`, after the search is over.
"""
from __future__ import annotations

import random
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

from .config import Config, ConfigError
from .data import Cifar10, load_cifar10, split_val
from .optim import check_schedule, n_epochs, total_steps
from .train import Context, RunStopped, run

MAX_DEFAULT_VAL = 5000
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_FAILURES_IN_A_ROW = 3  # then something is wrong with every trial, not with one


class TrialFailed(Exception):
    """One trial's error; its reason is stored on the trial and the study goes on."""


class StopAfterFailures:
    """A worker stops when its last MAX_FAILURES_IN_A_ROW trials all failed."""

    def __init__(self):
        self.in_a_row = 0

    def __call__(self, study: optuna.Study, trial) -> None:
        self.in_a_row = self.in_a_row + 1 if trial.state == TrialState.FAIL else 0
        if self.in_a_row >= MAX_FAILURES_IN_A_ROW:
            print(f"{self.in_a_row} trials in a row failed (the reason is stored on each as "
                  f"user_attrs['failure']); this worker stops")
            study.stop()


def storage_url(cfg: Config, study_name: str) -> str:
    if cfg.storage:
        return cfg.storage
    path = Path(cfg.runs_dir) / "tune" / f"{study_name}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def trials_csv_path(cfg: Config, study_name: str) -> Path:
    """runs/tune/<study>_trials.csv, whatever the storage."""
    folder = Path(cfg.runs_dir) / "tune"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{study_name}_trials.csv"


def _storage(cfg: Config, study_name: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """Workers started together on a fresh database race to create its tables; the loser's
    CREATE TABLE fails, and a second look finds the tables there."""
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    storage_url(cfg, study_name), heartbeat_interval=cfg.heartbeat,
                    grace_period=2 * cfg.heartbeat)
        except sqlalchemy.exc.SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random())


class TrialSeededTPESampler(optuna.samplers.TPESampler):
    """TPE whose random draws for trial n are seeded from (seed, n). One worker replays a study
    from --seed; workers sharing a study, started with the very same command, still draw
    different points, because the storage hands each trial a number of its own. The constant
    liar keeps them from converging on one point while their trials run."""

    def __init__(self, seed: int):
        super().__init__(seed=seed, constant_liar=True)
        self._base_seed = seed

    def before_trial(self, study: optuna.Study, trial) -> None:
        super().before_trial(study, trial)
        seed = (self._base_seed * 1_000_003 + trial.number) % 2**32
        # the numpy RandomStates that TPESampler.reseed_rng() reseeds, seeded instead of random
        self._rng.rng.seed(seed)
        self._random_sampler._rng.rng.seed(seed)


def make_study(cfg: Config, study_name: str) -> optuna.Study:
    pruner = {"median": optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
              "hyperband": optuna.pruners.HyperbandPruner(min_resource=1,
                                                       max_resource=n_epochs(cfg)),
              "none": optuna.pruners.NopPruner()}[cfg.pruner]
    return optuna.create_study(
        study_name=study_name, storage=_storage(cfg, study_name), direction="maximize",
        load_if_exists=True, sampler=TrialSeededTPESampler(cfg.seed), pruner=pruner)


# --- before the first trial: the split, the ranges, the study's settings -------------------------

def choose_val_size(cfg: Config, n_train: int) -> Config:
    """--val_size as given, else 10% of the training images, at most 5000."""
    if cfg.val_size == 0:
        cfg = cfg.replace(val_size=min(MAX_DEFAULT_VAL, n_train // 10))
        print(f"validation split: {cfg.val_size} of {n_train} training images (10%, at most "
              f"{MAX_DEFAULT_VAL}; --val_size to choose)")
    if not 0 < cfg.val_size < n_train:
        raise ConfigError(f"val_size: {cfg.val_size} does not fit {n_train} training images")
    return cfg


def check_ranges(cfg: Config, n_train: int) -> None:
    """Every pct_start of the search range must give each One Cycle phase a step: the ends of
    the range are the extremes."""
    steps = total_steps(cfg, (n_train - cfg.val_size) // cfg.batch_size)
    for pct in cfg.pct_start_range:
        try:
            check_schedule(cfg.replace(pct_start=pct), steps)
        except ConfigError:
            raise ConfigError(
                f"pct_start_range: {cfg.pct_start_range} over {steps} steps "
                f"({cfg.epochs} epochs): pct_start={pct} leaves a One Cycle phase with no "
                f"step; narrow the range or train longer") from None


def study_settings(cfg: Config, cifar: Cifar10) -> dict:
    """What must be equal for two trials to be compared."""
    return {"experiment": cfg.name, "model": cfg.model, "epochs": cfg.epochs, "width": cfg.width,
            "batch_size": cfg.batch_size, "val_size": cfg.val_size, "data": cifar.fingerprint()}


def claim(study: optuna.Study, settings: dict) -> None:
    """Record the settings on a new study; refuse a worker whose settings differ."""
    recorded = study.user_attrs
    if not recorded:
        for key, value in settings.items():
            study.set_user_attr(key, value)
        return
    differ = [f"{k}: study {recorded.get(k)!r}, this worker {v!r}" for k, v in settings.items()
              if recorded.get(k) != v]
    if differ:
        raise ConfigError(f"study: {study.study_name!r} was started with other settings ("
                          + "; ".join(differ) + "); use its settings or another --study")


# --- the trials --------------------------------------------------------------------------------

def trial_config(cfg: Config, trial: optuna.Trial, study_name: str) -> Config:
    return cfg.replace(
        max_lr=trial.suggest_float("max_lr", *cfg.max_lr_range, log=True),
        pct_start=trial.suggest_float("pct_start", *cfg.pct_start_range),
        dropout=trial.suggest_float("dropout", *cfg.dropout_range),
        wandb_group=study_name, runs_dir=str(Path(cfg.runs_dir) / "tune" / study_name),
        tune=0, retrain_best=False, use_test=False, save_model=False)


def objective(cfg: Config, study_name: str, cifar: Cifar10):
    def evaluate_trial(trial: optuna.Trial) -> float:
        tcfg = trial_config(cfg, trial, study_name)

        def started(tracker) -> None:  # where to find the trial, pruned or not
            trial.set_user_attr("run_dir", str(tracker.run_dir))
            trial.set_user_attr("wandb_id", tracker.wandb_id)
            trial.set_user_attr("wandb_url", tracker.wandb_url)

        def report(metrics: dict) -> None:
            if "val_acc" not in metrics:
                return
            trial.report(metrics["val_acc"], metrics["epoch"])
            if trial.should_prune():
                raise RunStopped("pruned", f"pruned after epoch {metrics['epoch']}")

        context = Context(job_type="trial", tags=(f"study:{study_name}",),
                          folder_prefix=f"{cfg.name}_trial{trial.number}",
                          extra_config={"study": study_name, "trial": trial.number},
                          on_start=started, on_epoch=report)
        try:
            return run(tcfg, context, cifar)["final_val_acc"]
        except RunStopped as e:
            if e.status != "pruned":
                raise  # Ctrl-C: the study stops, the trial is marked failed by Optuna
            raise optuna.TrialPruned(str(e)) from None
        except Exception as e:
            trial.set_user_attr("failure", f"{type(e).__name__}: {e}")
            print(f"trial {trial.number} failed ({type(e).__name__}: {e}); the study goes on")
            raise TrialFailed(str(e)) from e
    return evaluate_trial


def tune(cfg: Config, cifar: Cifar10 | None = None) -> optuna.Study:
    cifar = cifar if cifar is not None else load_cifar10(cfg.data_dir, download=cfg.download)
    cfg = choose_val_size(cfg, len(cifar.train_labels))
    check_ranges(cfg, len(cifar.train_labels))
    split_val(cifar.train_labels, cfg.val_size, cfg.seed)  # fails here, not in every trial
    study_name = cfg.study or cfg.name
    study = make_study(cfg, study_name)
    claim(study, study_settings(cfg, cifar))
    csv = trials_csv_path(cfg, study_name)

    def write_csv(study, _trial=None):
        study.trials_dataframe().to_csv(csv, index=False)

    done = len(study.get_trials(deepcopy=False, states=COUNTED))
    print(f"study {study_name!r} at {storage_url(cfg, study_name)}: {done} of {cfg.tune} trials "
          f"finished; validation split of {cfg.val_size} images; trials table {csv}")
    if done < cfg.tune:
        study.optimize(
            objective(cfg, study_name, cifar),
            # until the study, not this worker, holds N finished trials: workers share the
            # count, and a failed trial is replaced
            callbacks=[optuna.study.MaxTrialsCallback(cfg.tune, states=COUNTED), write_csv,
                       StopAfterFailures()],
            catch=(TrialFailed,), gc_after_trial=True)
    write_csv(study)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        print(f"no trial completed; trials in {csv}")
        return study
    best = study.best_trial
    print(f"best trial {best.number}: validation accuracy {best.value:.2%} with "
          + ", ".join(f"{k}={v:.4g}" for k, v in best.params.items()) + f"; trials in {csv}")
    if cfg.retrain_best:
        retrain_best(cfg, study_name, best, cifar)
    return study


def retrain_best(cfg: Config, study_name: str, best, cifar: Cifar10) -> dict:
    """The best trial's parameters on the whole training set, evaluated on the test split."""
    final = run(cfg.replace(**best.params, val_size=0, tune=0, retrain_best=False,
                            wandb_group=study_name),
                Context(job_type="retrain_best", tags=(f"study:{study_name}",),
                        folder_prefix=f"{study_name}_best",
                        extra_config={"study": study_name, "best_trial": best.number}), cifar)
    print(f"retrained with the best parameters on the whole training set: test accuracy "
          f"{final['final_test_acc']:.2%}")
    return final
