"""Optuna around `run(cfg)`: tune max_lr, pct_start and dropout on the validation split.

    python experiments/oc_24ep.py --tune 30 [--storage URL --study NAME --retrain_best]

`--tune N` runs trials until the study holds N finished (complete or pruned) trials, so the same
command run again resumes the study, and the same command on several processes or machines
against one storage URL shares it. Trials report validation accuracy each epoch to the pruner;
a worker killed mid-trial stops sending heartbeats and its trial is marked failed by the next
worker; a NaN loss fails its trial, not the study.
The test split is never looked at, except by `--retrain_best`, after the search is over.
"""
from __future__ import annotations

import random
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

from .config import Config
from .train import RunStopped, TrainingDiverged, run

DEFAULT_VAL_SIZE = 5000


def storage_url(cfg: Config, study_name: str) -> str:
    if cfg.storage:
        return cfg.storage
    path = Path(cfg.runs_dir) / "tune" / f"{study_name}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def trials_csv_path(cfg: Config, study_name: str) -> Path:
    """Next to the SQLite file, or under runs/tune/ for a server storage."""
    url = storage_url(cfg, study_name)
    folder = Path(url[len("sqlite:///"):]).parent if url.startswith("sqlite:///") \
        else Path(cfg.runs_dir) / "tune"
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
    storage = _storage(cfg, study_name)
    pruner = {"median": optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
              "hyperband": optuna.pruners.HyperbandPruner(min_resource=1, max_resource=cfg.epochs),
              "none": optuna.pruners.NopPruner()}[cfg.pruner]
    return optuna.create_study(
        study_name=study_name, storage=storage, direction="maximize", load_if_exists=True,
        sampler=TrialSeededTPESampler(cfg.seed),
        pruner=pruner)


def trial_config(cfg: Config, trial: optuna.Trial, study_name: str) -> Config:
    return cfg.replace(
        max_lr=trial.suggest_float("max_lr", *cfg.max_lr_range, log=True),
        pct_start=trial.suggest_float("pct_start", *cfg.pct_start_range),
        dropout=trial.suggest_float("dropout", *cfg.dropout_range),
        name=f"{study_name}_trial{trial.number}", wandb_group=study_name,
        runs_dir=str(Path(cfg.runs_dir) / "tune" / study_name), tune=0, save_model=False)


def objective(cfg: Config, study_name: str):
    def evaluate_trial(trial: optuna.Trial) -> float:
        tcfg = trial_config(cfg, trial, study_name)

        def report(metrics: dict) -> None:
            if "val_acc" not in metrics:
                return
            trial.report(metrics["val_acc"], metrics["epoch"])
            if trial.should_prune():
                raise RunStopped("pruned", f"pruned after epoch {metrics['epoch']}")

        try:
            summary = run(tcfg, on_epoch=report,
                          extra_config={"study": study_name, "trial": trial.number})
        except RunStopped as e:
            raise optuna.TrialPruned(str(e)) from None
        except TrainingDiverged as e:
            trial.set_user_attr("failure", str(e))
            raise
        trial.set_user_attr("run_dir", summary["run_dir"])
        return summary["final_val_acc"]
    return evaluate_trial


def tune(cfg: Config) -> optuna.Study:
    cfg = cfg.replace(val_size=cfg.val_size or DEFAULT_VAL_SIZE)
    study_name = cfg.study or cfg.name
    study = make_study(cfg, study_name)
    csv = trials_csv_path(cfg, study_name)
    counted = (TrialState.COMPLETE, TrialState.PRUNED)

    def write_csv(study, _trial=None):
        study.trials_dataframe().to_csv(csv, index=False)

    done = len(study.get_trials(deepcopy=False, states=counted))
    print(f"study {study_name!r} at {storage_url(cfg, study_name)}: {done} of {cfg.tune} trials "
          f"finished; validation split of {cfg.val_size} images")
    if done < cfg.tune:
        study.optimize(
            objective(cfg, study_name), n_trials=cfg.tune - done,
            # stop when the study, not this worker, reaches N: workers share the count
            callbacks=[optuna.study.MaxTrialsCallback(cfg.tune, states=counted), write_csv],
            catch=(TrainingDiverged,), gc_after_trial=True)
    write_csv(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        print(f"no trial completed; trials in {csv}")
        return study
    best = study.best_trial
    print(f"best trial {best.number}: validation accuracy {best.value:.2%} with "
          + ", ".join(f"{k}={v:.4g}" for k, v in best.params.items()) + f"; trials in {csv}")
    if cfg.retrain_best:
        final = run(cfg.replace(**best.params, val_size=0, tune=0,
                                name=f"{study_name}_best", wandb_group=study_name),
                    extra_config={"study": study_name, "best_trial": best.number})
        print(f"retrained with the best parameters on the whole training set: test accuracy "
              f"{final['final_test_acc']:.2%}")
    return study
