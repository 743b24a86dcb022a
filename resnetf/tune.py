"""Optuna around `run(cfg)`: tune the search space of the experiment's W&B sweep file
(`--sweep`, read by search_space.py) on the validation split.

    python experiments/oc_24ep.py --tune 30 [--storage URL --study NAME --retrain_best]

`--tune N` runs trials until the study holds N finished (complete or pruned) trials, so the same
command run again resumes the study, and the same command on several processes or machines
against one storage URL shares it. The study records the settings that make its trials
comparable (experiment, epochs, width, batch size, validation split, data, search space) and
refuses a worker whose settings differ. After every trial it writes runs/tune/<study>.html (the
optimisation history, parameter importances, parallel coordinates and the trials table) and
updates one W&B run of the study (job_type=study). Trials report validation accuracy each
epoch to the pruner and never evaluate on the test split; a trial that fails (a NaN loss, any
error) fails alone, with its reason stored on it, and the study goes on; a worker killed
mid-trial stops sending heartbeats and its trial is marked failed by the next worker. The test
split is looked at only by `--retrain_best`, after the search is over.
"""

from __future__ import annotations

import html
import logging
import os
import random
import re
import shutil
import socket
import time
import warnings
from pathlib import Path

import optuna
import pandas as pd
import sqlalchemy.exc
from optuna.trial import TrialState

from . import search_space, stats
from .config import (
    OBJECTIVES,
    Config,
    ConfigError,
    acts_where,
    field_defaults,
    result_fields,
)
from .data import Cifar10, load_cifar10, split_val
from .optim import check_schedule, n_epochs, total_steps
from .tracking import Tracker
from .train import Context, RunStopped, StudyFailed, run

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
            print(
                f"{self.in_a_row} trials in a row failed (the reason is stored on each as "
                f"user_attrs['failure']); this worker stops"
            )
            study.stop()


def storage_url(cfg: Config, study_name: str) -> str:
    if cfg.storage:
        return cfg.storage
    path = Path(cfg.runs_dir) / "tune" / f"{study_name}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def masked(url: str) -> str:
    """The URL as it may be printed: its password replaced."""
    return re.sub(r"(//[^:/@]+:)[^@/]*@", r"\1***@", url)


def trials_csv_path(cfg: Config, study_name: str) -> Path:
    """runs/tune/<study>_trials.csv, whatever the storage."""
    folder = Path(cfg.runs_dir) / "tune"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{study_name}_trials.csv"


def open_storage(cfg: Config, study_name: str):
    """The study's storage: a journal file (PATH.log or journal:PATH: Optuna's JournalStorage,
    shared by the processes of one machine without a server), else a database URL (SQLite,
    PostgreSQL, ...). One that cannot be opened is a ConfigError naming it (password masked)
    and the cause; nothing is written."""
    url = storage_url(cfg, study_name)
    if url.startswith("journal:") or url.endswith(".log"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:"))
        if not path.parent.is_dir():
            raise ConfigError(f"storage: cannot open {url}: no folder {path.parent}")
        try:
            repair_journal(path)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as e:
            raise ConfigError(f"storage: cannot open {url}: {e}") from None
    try:
        return _database(cfg, url)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as e:
        cause = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise ConfigError(
            f"storage: cannot open {masked(url)}: {type(e).__name__}: {masked(cause)}"
        ) from None


def repair_journal(path: Path) -> Path | None:
    """A journal file cut mid-line (its writer killed mid-write) still opens, but the next
    worker appends after the partial line and from then on the study cannot be opened. Found
    before any worker writes: under the journal's own lock (Optuna's JournalFileSymlinkLock, as
    its writers take it) the cut line is removed and the original kept beside it; said in one
    line. Returns the copy, or None when the file was whole."""
    from optuna.storages.journal import JournalFileSymlinkLock

    if not path.is_file() or path.stat().st_size == 0:
        return None
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()
        if data.endswith(b"\n"):
            return None
        whole = data.rfind(b"\n") + 1
        kept = path.with_name(f"{path.name}.cut-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(path, kept)
        with open(path, "r+b") as f:
            f.truncate(whole)
    finally:
        lock.release()
    print(
        f"storage: {path} ended in a line cut short (a writer killed mid-write): its "
        f"{len(data) - whole} bytes removed, the study goes on; the original is kept as {kept}"
    )
    return kept


def _database(cfg: Config, url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """Workers started together on a fresh database race to create its tables; the loser's
    CREATE TABLE (or its version row) fails, and a second look finds them there. Any other
    error (a server that is down, a URL no driver knows) is not a race: it fails at once."""
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=cfg.heartbeat, grace_period=2 * cfg.heartbeat
                )
        except (
            sqlalchemy.exc.IntegrityError,
            sqlalchemy.exc.ProgrammingError,
            sqlalchemy.exc.OperationalError,
        ) as e:
            # SQLite reports the same race as an OperationalError ("... already exists"); any
            # other OperationalError (a server that is down) is not a race
            lost_race = not isinstance(
                e, sqlalchemy.exc.OperationalError
            ) or "already exists" in str(e)
            if attempt == attempts - 1 or not lost_race:
                raise
            time.sleep(0.2 + random.random())


# --- workers that died: their trials left RUNNING ------------------------------------------------


def worker_identity() -> dict:
    """Who runs a trial: host, pid and the process's start (a reused pid is another process),
    and its SLURM job, so that a worker of another host can tell whether it still runs."""
    from .claims import identity

    return {**identity(), "slurm_job_id": os.environ.get("SLURM_JOB_ID")}


def worker_gone(worker: dict) -> str | None:
    """Why a RUNNING trial's worker is known to be gone, or None (alive, or nobody can tell):
    on this host by pid and start, elsewhere by SLURM's answer for its job (a job SLURM no
    longer has, or one that runs again after a requeue, is not running that trial)."""
    from .claims import alive
    from .places import squeue_live

    live = alive(worker) if worker.get("host") else False
    if live is False:
        return f"its worker (process {worker.get('pid')} on {worker.get('host')}) no longer exists"
    if live is None and worker.get("slurm_job_id"):
        if squeue_live({"job_id": worker["slurm_job_id"]}) is False:
            return f"its worker's SLURM job {worker['slurm_job_id']} has ended"
    return None


def fail_orphans(study: optuna.Study, storage) -> list[int]:
    """A killed or requeued worker's trial stays RUNNING for good on a journal file (Optuna's
    JournalStorage has no heartbeats) and until its heartbeat is missed on a database. Each
    trial records its worker (worker_identity); whoever opens the study, on any host, marks
    failed, with the reason, every RUNNING trial whose worker is known to be gone. Two workers
    may find one orphan together: the reason is the same from both, and failing a finished
    trial is skipped. Only public calls: the storage's and study.tell. Returns the numbers this
    worker failed."""
    failed = []
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker") or {}
        reason = worker_gone(worker) if worker else None
        if reason is None:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            storage.set_trial_user_attr(trial_id, "failure", reason)
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError):
            continue  # another worker failed it first
        print(f"trial {trial.number} marked failed: {reason}")
        failed.append(trial.number)
    return failed


class _QuietFailures(logging.Filter):
    """Optuna logs a failed trial with its whole traceback; the repo's own line and the trial's
    user_attrs["failure"] already say why, so those records are dropped. It sits on the handlers
    of Optuna's library logger ("optuna", as optuna.logging documents it), which every Optuna
    module's records pass through, so no module of Optuna's is named."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Trial ") and " failed" in message)


SAMPLERS = {
    # constant liar: parallel workers see each other's running trials as bad, not as empty
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, constant_liar=True),
    # the noise is learned (deterministic_objective=False, the default): seeds make it noisy
    "gp": lambda seed: optuna.samplers.GPSampler(seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """--sampler, its draws for trial n seeded from (--seed, n) through Optuna's public API
    only: before each trial a fresh sampler of the kind is made with that seed, and every call
    goes to it. One worker replays a study from --seed; workers sharing a study, started with
    the very same command, still draw different points, because the storage hands each trial a
    number of its own. What a sampler learns lives in the storage's trials, not in the object
    (GPSampler's kernel cache is rebuilt: slower, the same points)."""

    def __init__(self, kind: str, seed: int):
        self.kind, self.seed = kind, seed
        self.inner = SAMPLERS[kind](seed)

    def before_trial(self, study: optuna.Study, trial) -> None:
        self.inner = SAMPLERS[self.kind]((self.seed * 1_000_003 + trial.number) % 2**32)
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def make_pruner(cfg: Config):
    with warnings.catch_warnings():  # WilcoxonPruner is "experimental" in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return {
            "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
            "hyperband": lambda: optuna.pruners.HyperbandPruner(
                min_resource=1, max_resource=n_epochs(cfg)
            ),
            # seeds as the resource: rung r at min_seeds x reduction^r seeds done
            "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(
                min_resource=cfg.prune_min_seeds,
                reduction_factor=cfg.prune_reduction,
                min_early_stopping_rate=0,
            ),
            "wilcoxon": lambda: optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2),
            "bound": optuna.pruners.NopPruner,  # the trial applies the bound itself
            "none": optuna.pruners.NopPruner,
        }[cfg.pruner_kind]()


def make_study(cfg: Config, study_name: str) -> tuple[optuna.Study, object]:
    """The study (created, or loaded where it exists) and its storage."""
    storage = open_storage(cfg, study_name)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        directions=[OBJECTIVES[o] for o in cfg.objective_list],
        load_if_exists=True,
        sampler=TrialSeededSampler(cfg.sampler, cfg.seed),
        pruner=make_pruner(cfg),
    )
    if len(cfg.objective_list) > 1:
        with warnings.catch_warnings():  # "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(cfg.objective_list)
    return study, storage


def enqueue_start_point(cfg: Config, study: optuna.Study, space: dict) -> bool:
    """The experiment's own config as the study's first trial, where it lies in the search
    space: the base recipe is measured in the same study, on the same seeds. Only on a study
    with no trial yet (skip_if_exists keeps a second worker from queueing it again)."""
    if study.get_trials(deepcopy=False):
        return False
    point = {n: getattr(cfg, n) for n, p in space.items() if p.distribution != "constant"}
    if not point or not all(space[n].contains(v) for n, v in point.items()):
        return False
    study.enqueue_trial(point, user_attrs={"start_point": True}, skip_if_exists=True)
    return True


# --- before the first trial: the split, the ranges, the study's settings -------------------------


def choose_val_size(cfg: Config, n_train: int) -> Config:
    """--val_size as given, else 10% of the training images, at most 5000."""
    if cfg.val_size == 0:
        cfg = cfg.replace(val_size=min(MAX_DEFAULT_VAL, n_train // 10))
        print(
            f"validation split: {cfg.val_size} of {n_train} training images (10%, at most "
            f"{MAX_DEFAULT_VAL}; --val_size to choose)"
        )
    if not 0 < cfg.val_size < n_train:
        raise ConfigError(f"val_size: {cfg.val_size} does not fit {n_train} training images")
    return cfg


def check_space(cfg: Config, space: dict, n_train: int) -> None:
    """Every point of the search space must be a valid config whose One Cycle phases each get a
    step: checked at every corner of the space (the checks are monotonic in each parameter).
    A parameter that acts at no corner (Muon's lr on an SGD recipe) is refused; one that acts
    at some (muon_lr beside optimizer: [sgd, muon]) is dropped where it does not."""
    check_every_parameter_acts(cfg, space)
    for values, corner in search_space.corners(cfg, space):
        where = ", ".join(f"{k}={v}" for k, v in values.items())
        corner = corner.settled()
        try:
            corner.validate()
            steps = total_steps(corner, (n_train - corner.val_size) // corner.batch_size)
        except ConfigError as e:
            raise ConfigError(f"sweep: {cfg.sweep} allows {where}, which is refused: {e}") from None
        try:
            check_schedule(corner, steps)
        except ConfigError:
            raise ConfigError(
                f"sweep: {cfg.sweep} allows {where}: over {steps} steps ({corner.epochs} "
                f"epochs) that leaves a One Cycle phase with no step; narrow the range or "
                f"train longer"
            ) from None


def check_every_parameter_acts(cfg: Config, space: dict) -> None:
    idle = set(space)
    for _, corner in search_space.corners(cfg, space):
        idle &= set(corner.idle())
    if idle := [n for n in space if n in idle]:
        name, where = idle[0], acts_where()[idle[0]]
        raise ConfigError(
            f"sweep: {cfg.sweep} searches {name}, which acts only with {where} (the experiment: "
            f"{where.here(cfg)}): every trial would ignore it: drop it, or search what it needs too"
        )


def study_settings(cfg: Config, cifar: Cifar10, space: dict) -> dict:
    """What must be equal for two trials to be compared: every field that changes what a run
    computes (as its declaration in config.py says), except those the search space sets, as a
    trial runs it (blind to the test split); what the study optimises and over how many seeds;
    the data and the search space."""
    trial = cfg.replace(use_test=False).to_dict()
    return {
        **{k: trial[k] for k in result_fields() if k not in space},
        "objectives": cfg.objective_list,
        "trial_seeds": cfg.trial_seeds,
        "min_val_acc": cfg.min_val_acc,
        "data": cifar.fingerprint(),
        "search_space": search_space.describe(space),
    }


def claim(study: optuna.Study, settings: dict) -> None:
    """Record the settings on a new study; refuse a worker whose settings differ. They go in as
    one attribute, in one write: a worker that looks while the first is recording them sees all
    of them or none (one write per setting let it see some, and refuse itself: the two-worker
    test's flake)."""
    recorded = study.user_attrs.get("settings")
    if recorded is None:
        study.set_user_attr("settings", settings)
        return
    # a field added to Config since the study began is not in its record: at its default it
    # computes what the study's code computed, so it is no difference
    defaults = field_defaults()
    differ = [
        f"{k}: study {recorded.get(k)!r}, this worker {v!r}"
        for k, v in settings.items()
        if k != "search_space"
        and recorded.get(k) != v
        and not (k not in recorded and k in defaults and v == defaults[k])
    ]
    theirs, ours = recorded.get("search_space") or {}, settings.get("search_space") or {}
    differ += [
        f"search space of {k}: study {theirs.get(k)}, this worker {ours.get(k)}"
        for k in sorted(set(theirs) | set(ours))
        if theirs.get(k) != ours.get(k)
    ]
    if differ:
        raise ConfigError(
            f"study: {study.study_name!r} was started with other settings ("
            + "; ".join(differ)
            + "); use its settings or another --study"
        )


# --- the trials --------------------------------------------------------------------------------


def trial_config(cfg: Config, trial: optuna.Trial, study_name: str, space: dict) -> Config:
    """A trial: the suggested point, blind to the test split, and only the work its objective
    needs (no analysis figures, no saved model)."""
    return (
        cfg.replace(
            **search_space.suggest(trial, space),
            wandb_group=study_name,
            runs_dir=str(Path(cfg.runs_dir) / "tune" / study_name),
            use_test=False,
            save_model=False,
            analysis=cfg.analysis and cfg.trial_analysis,
            checkpoint=False,  # a trial is not resumed: a failed one is replaced
        )
        .untuned()
        .settled()
    )  # the study's settings, not a run's; a point's idle fields dropped


def objective(cfg: Config, study_name: str, cifar: Cifar10, space: dict):
    return Objective(cfg, study_name, cifar, space)


class Objective:
    """A trial trains --trial_seeds seeds of its point, one after another (the same seeds for
    every trial, so trials are compared seed for seed), each an ordinary run in the study's
    group, and is worth their mean (per objective). What the pruner reads: a one-seed trial's
    validation accuracy each epoch (median, hyperband); a K-seed trial's after each seed, as step
    k = seeds done (halving: the running mean; wilcoxon: that seed's own). A constrained study
    (--min_val_acc) prunes a trial before its first seed when its compute, known in advance,
    cannot beat the cheapest feasible trial's, and after >= 2 seeds when the one-sided upper
    bound on its mean accuracy falls below the floor."""

    def __init__(self, cfg: Config, study_name: str, cifar: Cifar10, space: dict):
        self.cfg, self.study_name, self.cifar, self.space = cfg, study_name, cifar, space
        self.objectives, self.kind = cfg.objective_list, cfg.pruner_kind

    def __call__(self, trial: optuna.Trial):
        cfg = self.cfg
        # who runs it: a journal study's next worker fails it if this process dies (fail_orphans)
        trial.set_user_attr("worker", worker_identity())
        refuse_surplus(trial, cfg.tune)
        tcfg = trial_config(cfg, trial, self.study_name, self.space)
        context, summaries = self.context(trial, tcfg), []
        try:
            pflop = trial_pflop(tcfg, self.cifar) if "pflop" in self.objectives else None
            if cfg.min_val_acc is not None and pflop is not None:
                cannot_win(trial, pflop)
            for k in range(cfg.trial_seeds):
                summaries.append(run(tcfg.replace(seed=cfg.seed + k), context, self.cifar))
                if k + 1 < cfg.trial_seeds:
                    self.between_seeds(trial, [s["final_val_acc"] for s in summaries])
            values = trial_values(summaries, pflop)
        except optuna.TrialPruned:
            raise
        except RunStopped as e:
            if e.status != "pruned":
                raise  # Ctrl-C: the study stops, the trial is marked failed by Optuna
            raise optuna.TrialPruned(str(e)) from None
        except Exception as e:
            trial.set_user_attr("failure", f"{type(e).__name__}: {e}")
            print(f"trial {trial.number} failed ({type(e).__name__}: {e}); the study goes on")
            raise TrialFailed(str(e)) from e
        self.record_accuracy(trial, [s["final_val_acc"] for s in summaries])
        for name, value in values.items():
            trial.set_user_attr(name, value)
        picked = tuple(values[o] for o in self.objectives)
        return picked if len(picked) > 1 else picked[0]

    def context(self, trial: optuna.Trial, tcfg: Config) -> Context:
        run_dirs = []

        def started(tracker) -> None:  # where to find the trial, pruned or not
            run_dirs.append(str(tracker.run_dir))
            if len(run_dirs) == 1:
                trial.set_user_attr("run_dir", str(tracker.run_dir))
                trial.set_user_attr("wandb_id", tracker.wandb_id)
                trial.set_user_attr("wandb_url", tracker.wandb_url)
            trial.set_user_attr("run_dirs", list(run_dirs))

        def report(metrics: dict) -> None:
            if self.kind not in ("median", "hyperband") or "val_acc" not in metrics:
                return
            trial.report(metrics["val_acc"], metrics["epoch"])
            # after the last epoch the trial is done: stopping it now would save nothing
            if metrics["epoch"] < n_epochs(tcfg) and trial.should_prune():
                raise RunStopped("pruned", f"pruned after epoch {metrics['epoch']}")

        return Context(
            job_type="trial",
            tags=(f"study:{self.study_name}",),
            folder_prefix=f"{self.cfg.name}_trial{trial.number}",
            extra_config={"study": self.study_name, "trial": trial.number},
            on_start=started,
            on_epoch=report,
            figures=self.cfg.trial_analysis,
        )

    def between_seeds(self, trial: optuna.Trial, accs: list[float]) -> None:
        """After seed k of K (k < K): report, and prune what the pruner or the bound says."""
        k, kind, floor = len(accs), self.kind, self.cfg.min_val_acc
        if kind == "wilcoxon":
            trial.report(accs[-1], k - 1)  # step = which seed: paired with the best trial's
        elif kind in ("halving", "bound"):
            trial.report(sum(accs) / k, k)  # step = seeds done, value = their mean
        reason = None
        if kind == "bound" and k >= 2 and stats.upper_bound(accs) < floor:
            reason = (
                f"infeasible after {k} seeds: the 95% upper bound on its mean validation "
                f"accuracy, {stats.upper_bound(accs):.2%}, is below the floor {floor:.2%}"
            )
        elif kind in ("halving", "wilcoxon") and trial.should_prune():
            reason = f"{kind} after {k} of {self.cfg.trial_seeds} seeds (mean {sum(accs) / k:.2%})"
        if reason is not None:
            self.record_accuracy(trial, accs)
            trial.set_user_attr("pruned_because", reason)
            raise optuna.TrialPruned(reason)

    def record_accuracy(self, trial: optuna.Trial, accs: list[float]) -> None:
        """The trial's seeds, their mean, 95% interval and, in a constrained study, its
        feasibility (as an Optuna constraint too: feasible when <= 0)."""
        mean, floor = sum(accs) / len(accs), self.cfg.min_val_acc
        trial.set_user_attr("seed_values", accs)
        trial.set_user_attr("seed_std", float(pd.Series(accs).std()) if len(accs) > 1 else None)
        trial.set_user_attr("val_acc", mean)
        if len(accs) > 1:
            low, high = stats.mean_interval(accs)
            trial.set_user_attr("val_acc_ci_low", low)
            trial.set_user_attr("val_acc_ci_high", high)
        if floor is not None:
            trial.set_constraint("min_val_acc", floor - mean)
            trial.set_user_attr("feasible", mean >= floor)


def cheapest_feasible(study: optuna.Study):
    """The constrained study's answer so far: the complete feasible trial of least cost."""
    feasible = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("feasible")
    ]
    return min(feasible, key=lambda t: t.value) if feasible else None


def cannot_win(trial: optuna.Trial, pflop: float) -> None:
    """Pruned before it trains: a trial whose compute is no lower than the cheapest feasible
    trial's cannot be the answer, whatever its accuracy."""
    best = cheapest_feasible(trial.study)
    if best is not None and pflop >= best.value:
        reason = (
            f"cannot win: {pflop:.4g} PFLOP, no less than feasible trial {best.number}'s "
            f"{best.value:.4g}; not trained"
        )
        trial.set_user_attr("pflop", pflop)
        trial.set_user_attr("pruned_because", reason)
        raise optuna.TrialPruned(reason)


class StopAtTotal:
    """After each trial: this worker stops once the study's finished trials and the ones other
    workers are running make `wanted` (Optuna's MaxTrialsCallback counts the finished only, so
    workers finishing together would each start one more)."""

    def __init__(self, wanted: int):
        self.wanted = wanted

    def __call__(self, study: optuna.Study, trial) -> None:
        if len(study.get_trials(deepcopy=False, states=(*COUNTED, TrialState.RUNNING))) >= (
            self.wanted
        ):
            study.stop()


def refuse_surplus(trial: optuna.Trial, wanted: int) -> None:
    """Workers each start a trial while the study has fewer than `wanted` finished; a trial whose
    earlier ones, finished or still running, already make `wanted` is surplus: failed (not
    counted) and its worker stops. (A running one that fails is replaced by its worker: the study
    still ends with exactly `wanted`.)"""
    earlier = [
        t
        for t in trial.study.get_trials(deepcopy=False, states=(*COUNTED, TrialState.RUNNING))
        if t.number < trial.number
    ]
    if len(earlier) >= wanted:
        trial.set_user_attr("failure", f"surplus: the study already holds {wanted} trials")
        trial.study.stop()
        raise TrialFailed("surplus")


def trial_pflop(tcfg: Config, cifar: Cifar10) -> float:
    """The counted compute of one run of the trial's point (the same for each seed), known
    before it trains (a second or two on a CPU for ResNet-9)."""
    from .flops import flops

    return flops(tcfg, n_train=len(cifar.train_labels), n_test=0)["total_pflop"]


def trial_values(summaries: list[dict], pflop: float | None) -> dict:
    """What the trial is worth on each of the study's objectives: mean validation accuracy and
    train seconds over its seeds, and the counted compute of one run."""
    n = len(summaries)
    values = {
        "val_acc": sum(s["final_val_acc"] for s in summaries) / n,
        "train_seconds": sum(s["train_seconds"] for s in summaries) / n,
    }
    if pflop is not None:
        values["pflop"] = pflop
    return values


def open_study(cfg: Config, cifar: Cifar10 | None = None):
    """(cfg with its validation split, the data, the space, the study, its storage): the space
    and split checked, the study created or joined (claim) and a dead worker's trials failed."""
    space = search_space.read_space(cfg.sweep)
    cifar = cifar if cifar is not None else load_cifar10(cfg.data_dir, download=cfg.download)
    cfg = choose_val_size(cfg, len(cifar.train_labels))
    check_space(cfg, space, len(cifar.train_labels))
    split_val(cifar.train_labels, cfg.val_size, cfg.seed)  # fails here, not in every trial
    study, storage = make_study(cfg, cfg.study or cfg.name)
    claim(study, study_settings(cfg, cifar, space))
    fail_orphans(study, storage)
    if enqueue_start_point(cfg, study, space):
        print(f"trial 0 is the experiment's own config ({', '.join(p for p in space)} as set)")
    return cfg, cifar, space, study


def tune(cfg: Config, cifar: Cifar10 | None = None) -> optuna.Study:
    cfg, cifar, space, study = open_study(cfg, cifar)
    study_name = study.study_name
    report = StudyReport(cfg, study_name)
    done = len(study.get_trials(deepcopy=False, states=COUNTED))
    print(
        f"study {study_name!r} at {masked(storage_url(cfg, study_name))}: {done} of {cfg.tune} "
        f"trials finished; validation split of {cfg.val_size} images; searching "
        f"{', '.join(space)} ({search_space.sweep_path(cfg.sweep)}); study page {report.html}"
    )
    try:
        if done < cfg.tune and cfg.launcher == "inline":
            optimize(cfg, study, cifar, space, report)
        elif done < cfg.tune:  # --jobs workers as tasks; this process only watches and reports
            from .launch import run_workers

            def progress() -> str:
                return f"{len(study.get_trials(deepcopy=False, states=COUNTED))}/{cfg.tune} trials"

            run_workers(cfg, lambda: StudyWorker(cfg), f"tune_{study_name}", progress)
        report(study)
    finally:
        report.close()
    best = chosen_trial(cfg, study, report)
    if best is not None and cfg.retrain_best:
        retrain_best(cfg, study_name, best, cifar, space)
    return study


def optimize(cfg: Config, study: optuna.Study, cifar: Cifar10, space: dict, report=None) -> None:
    """Trials in this process until the study, not this worker, holds --tune finished trials:
    workers share the count, and a failed trial is replaced."""
    quiet, handlers = _QuietFailures(), logging.getLogger("optuna").handlers
    for handler in handlers:
        handler.addFilter(quiet)
    stopped = StopOnExit(objective(cfg, study.study_name, cifar, space))
    try:
        study.optimize(
            stopped,
            callbacks=[
                StopAtTotal(cfg.tune),
                *([report] if report is not None else []),
                StopAfterFailures(),
                stopped.stop_study,
            ],
            catch=(TrialFailed,),
            gc_after_trial=True,
        )
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)
    if stopped.exit is not None:  # the worker goes on exiting (submitit requeues it)
        raise stopped.exit


class StopOnExit:
    """A trial whose worker is made to exit mid-trial (SystemExit: submitit's requeue, say) is
    failed with that reason before the worker exits: Optuna catches Exception only, and would
    leave it RUNNING for good on a journal file. The study stops, then the exit goes on."""

    def __init__(self, evaluate):
        self.evaluate, self.exit = evaluate, None

    def __call__(self, trial: optuna.Trial):
        try:
            return self.evaluate(trial)
        except SystemExit as e:
            self.exit = e
            trial.set_user_attr("failure", f"its worker was stopped mid-trial (exit {e.code})")
            raise TrialFailed("worker stopped") from None

    def stop_study(self, study: optuna.Study, _trial) -> None:
        if self.exit is not None:
            study.stop()


class StudyWorker:
    """One of a study's --jobs workers, as a task (resnetf.launch): it joins the study and runs
    trials until the study holds --tune finished ones. Requeued on preemption, it joins again;
    its unfinished trial is failed (heartbeat, or fail_orphans) and replaced."""

    def __init__(self, cfg: Config):
        self.cfg = cfg.here().replace(progress=False)

    def __call__(self) -> int:
        cfg, cifar, space, study = open_study(self.cfg)
        optimize(cfg, study, cifar, space)
        return len(study.get_trials(deepcopy=False, states=COUNTED))

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def chosen_trial(cfg: Config, study: optuna.Study, report: StudyReport):
    """The study's answer, printed: the best trial, or with several objectives the front and the
    front trial --target_acc picks; None when no trial completed (StudyFailed when every trial
    failed) or no front trial reaches the target."""
    where = f"trials in {report.csv}, study page {report.html}"
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if {t.state for t in study.get_trials(deepcopy=False)} == {TrialState.FAIL}:
            raise StudyFailed(
                f"study {study.study_name!r}: no trial completed, every one failed (the reason "
                f"is on each, user_attrs['failure']; {where})"
            )
        print(f"no trial completed; {where}")
        return None
    if cfg.min_val_acc is not None:
        return chosen_feasible(cfg, study, where)
    if len(cfg.objective_list) > 1:
        best, why = choose_front_trial(study.best_trials, cfg.objective_list, cfg.target_acc)
        print(
            f"Pareto front ({', '.join(cfg.objective_list)}): "
            + "; ".join(_describe(t, cfg.objective_list) for t in study.best_trials)
            + f"; {where}\n{why}"
        )
        return best
    best = study.best_trial
    print(
        f"best trial {best.number}: validation accuracy {best.value:.2%} with "
        + ", ".join(f"{k}={_short(v)}" for k, v in best.params.items())
        + f"; {where}"
    )
    return best


def chosen_feasible(cfg: Config, study: optuna.Study, where: str):
    """A constrained study's answer, printed: the cheapest trial whose mean validation accuracy
    holds the floor, with its interval; None (said) when no trial holds it."""
    (cost,) = cfg.objective_list
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    best = cheapest_feasible(study)
    counts = (
        f"{sum(bool(t.user_attrs.get('feasible')) for t in complete)} of {len(complete)} "
        f"complete trials hold validation accuracy {cfg.min_val_acc:.2%}, {len(pruned)} pruned"
    )
    if best is None:
        print(f"no trial holds validation accuracy {cfg.min_val_acc:.2%} ({counts}); {where}")
        return None
    print(f"cheapest feasible trial {_feasible_line(best, cost)}; {counts}; {where}")
    return best


def _feasible_line(t, cost: str) -> str:
    low, high = t.user_attrs.get("val_acc_ci_low"), t.user_attrs.get("val_acc_ci_high")
    interval = f", 95% interval {low:.2%} to {high:.2%}" if low is not None else ""
    return (
        f"{t.number}: {cost} {t.value:.4g}, mean validation accuracy "
        f"{t.user_attrs.get('val_acc', float('nan')):.2%} over "
        f"{len(t.user_attrs.get('seed_values') or [1])} seeds{interval}; "
        + ", ".join(f"{k}={_short(v)}" for k, v in t.params.items())
    )


def _describe(trial, objectives: list[str]) -> str:
    return (
        f"trial {trial.number} ("
        + ", ".join(
            f"{o} {v:.2%}" if o == "val_acc" else f"{o} {v:.4g}"
            for o, v in zip(objectives, trial.values)
        )
        + ")"
    )


def choose_front_trial(front: list, objectives: list[str], target_acc: float | None):
    """(trial, why): the cheapest front trial whose validation accuracy reaches target_acc
    (cheapest by the first objective other than val_acc), or without a target the most accurate
    front trial; (None, why) when no front trial reaches the target."""
    acc = objectives.index("val_acc")
    cost = next(i for i, o in enumerate(objectives) if o != "val_acc")
    if target_acc is None:
        best = max(front, key=lambda t: t.values[acc])
        return best, (
            f"chose trial {best.number}: the most accurate of the {len(front)} front trials "
            f"(validation accuracy {best.values[acc]:.2%}; --target_acc picks the cheapest that "
            f"reaches a target instead)"
        )
    reaching = [t for t in front if t.values[acc] >= target_acc]
    if not reaching:
        return None, (
            f"no front trial reaches validation accuracy {target_acc:.2%} (the best: "
            f"{max(t.values[acc] for t in front):.2%}); nothing retrained"
        )
    best = min(reaching, key=lambda t: t.values[cost])
    return best, (
        f"chose trial {best.number}: the lowest {objectives[cost]} ({best.values[cost]:.4g}) of "
        f"the {len(reaching)} front trials whose validation accuracy reaches {target_acc:.2%} "
        f"(it has {best.values[acc]:.2%})"
    )


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def retrain_best(cfg: Config, study_name: str, best, cifar: Cifar10, space: dict) -> dict:
    """The best trial's point on the whole training set, evaluated on the test split; with
    --seeds N over N seeds (each claimed: a rerun trains none twice), and with --target_acc the
    one-sided test that their mean reaches it (the repo's record statement)."""
    fixed = {k: p.values[0] for k, p in space.items() if p.distribution == "constant"}
    point = (
        cfg.replace(**fixed, **best.params, val_size=0, wandb_group=study_name)
        .untuned(keep=("target_acc",))
        .settled()
    )
    if cfg.seeds > 1:
        from .repeat import run_seeds

        print(f"retraining trial {best.number}'s point over {cfg.seeds} seeds, tested on test")
        return run_seeds(point.replace(name=f"{study_name}_best"))
    final = run(
        point.replace(target_acc=None),
        Context(
            job_type="retrain_best",
            tags=(f"study:{study_name}",),
            folder_prefix=f"{study_name}_best",
            model_aliases=("latest", "best"),
            extra_config={"study": study_name, "best_trial": best.number},
        ),
        cifar,
    )
    print(
        f"retrained with the best parameters on the whole training set: test accuracy "
        f"{final['final_test_acc']:.2%}"
    )
    return final


# --- watching a study: its page and its W&B run ---------------------------------------------------


def worker_tag() -> str:
    """This worker process, as a folder name: host_pid."""
    return f"{socket.gethostname()}_{os.getpid()}"


class StudyReport:
    """After every trial (an Optuna callback): runs/tune/<study>_trials.csv, the study page
    runs/tune/<study>.html (self-contained: optimisation history, parameter importances,
    parallel coordinates, the trials table with each trial's run folder and W&B link), both
    written atomically, and a W&B run (job_type=study, in the study's group) holding the trials
    table and the best point so far. W&B takes one writer per run, so each worker process
    writes a run of its own (runs/tune/<study>_study/<host>_<pid>/): workers sharing a study
    never write one run at once, and the group shows them side by side."""

    def __init__(self, cfg: Config, study_name: str):
        self.csv = trials_csv_path(cfg, study_name)
        self.html = self.csv.parent / f"{study_name}.html"
        folder = self.csv.parent / f"{study_name}_study" / worker_tag()
        folder.mkdir(parents=True, exist_ok=True)
        self.tracker = Tracker(
            cfg.replace(name=study_name, wandb_group=study_name),
            folder,
            job_type="study",
            tags=(f"study:{study_name}",),
        )

    def __call__(self, study: optuna.Study, _trial=None) -> None:
        table = trials_table(study)
        # another worker (or a reader) sees the old file or the new one, never half of one
        atomic_write(self.csv, lambda path: table.to_csv(path, index=False))
        try:
            write_study_page(study, table, self.html)
        except Exception as e:  # a figure must not stop a study
            warnings.warn(f"{self.html} not written ({type(e).__name__}: {e})", stacklevel=2)
        self.tracker.log_table("trials", table.astype(str))
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if completed and len(study.directions) > 1:
            self.tracker.update_summary(
                {
                    "pareto_front": [t.number for t in study.best_trials],
                    "best_val_acc": max(t.user_attrs.get("val_acc", 0) for t in completed),
                    "trials_finished": len(completed),
                }
            )
        elif completed and (study.user_attrs.get("settings") or {}).get("min_val_acc"):
            best = cheapest_feasible(study)
            self.tracker.update_summary(
                {
                    "feasible_trials": sum(bool(t.user_attrs.get("feasible")) for t in completed),
                    "trials_finished": len(completed),
                    **(
                        {
                            "best_trial": best.number,
                            "best_cost": best.value,
                            "best_val_acc": best.user_attrs.get("val_acc"),
                            **{f"best_{k}": v for k, v in best.params.items()},
                        }
                        if best is not None
                        else {}
                    ),
                }
            )
        elif completed:
            best = max(completed, key=lambda t: t.value)
            self.tracker.update_summary(
                {
                    "best_val_acc": best.value,
                    "best_trial": best.number,
                    **{f"best_{k}": v for k, v in best.params.items()},
                    "trials_finished": len(completed),
                }
            )

    def close(self) -> None:
        self.tracker.close({"trials": str(self.csv), "study_page": str(self.html)})


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial; with several objectives, a column for each and `pareto_front`."""
    frame = study.trials_dataframe(
        attrs=("number", "state", "value", "duration", "params", "user_attrs")
    )
    if "duration" in frame:
        frame["duration"] = frame["duration"].dt.total_seconds()
    if len(study.directions) > 1 and len(frame):
        front = {t.number for t in study.best_trials}
        frame.insert(2, "pareto_front", frame["number"].isin(front))
    return frame


def study_figures(study: optuna.Study, completed: list) -> tuple[list, str]:
    """The page's plotly figures and its one-line summary: the Pareto front with several
    objectives, else the optimisation history and the parameter importances."""
    from optuna import visualization as vis

    figures = []
    if len(study.directions) > 1:
        names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
        acc = names.index("val_acc") if "val_acc" in names else 0
        if completed:
            figures.append(vis.plot_pareto_front(study, target_names=names))
            figures.append(
                vis.plot_parallel_coordinate(
                    study, target=lambda t: t.values[acc], target_name=names[acc]
                )
            )
        summary = (
            f"Pareto front ({', '.join(names)}): "
            + "; ".join(_describe(t, names) for t in study.best_trials)
            if completed
            else "no trial completed yet"
        )
    else:
        if completed:
            figures.append(vis.plot_optimization_history(study))
            figures.append(vis.plot_parallel_coordinate(study))
        if len(completed) >= 2 and completed[0].params:
            figures.append(vis.plot_param_importances(study))
        constrained = any("feasible" in t.user_attrs for t in completed)
        best = cheapest_feasible(study) if constrained else None
        if constrained:
            summary = (
                f"cheapest feasible trial {_feasible_line(best, 'cost')}"
                if best is not None
                else "no feasible trial yet"
            )
            return figures, summary
        summary = (
            f"best validation accuracy {study.best_value:.2%} (trial "
            f"{study.best_trial.number}: "
            + ", ".join(f"{k}={_short(v)}" for k, v in study.best_params.items())
            + ")"
            if completed
            else "no trial completed yet"
        )
    return figures, summary


def write_study_page(study: optuna.Study, table: pd.DataFrame, path: Path) -> Path:
    """One HTML file that works offline (plotly's JavaScript embedded once)."""

    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    figures, summary = study_figures(study, completed)
    parts = [
        f"<h1>study {html.escape(study.study_name)}</h1>",
        f"<p>{len(completed)} completed of {len(study.trials)} trials; "
        + html.escape(summary)
        + "</p>",
    ]
    parts += [
        f.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False)
        for i, f in enumerate(figures)
    ]
    links = table.copy()
    if "user_attrs_run_dir" in links:  # relative to the page, so the folder moves with it
        links["user_attrs_run_dir"] = [
            os.path.relpath(v, path.parent) if isinstance(v, str) else v
            for v in links["user_attrs_run_dir"]
        ]
    for column, label in (("user_attrs_run_dir", "run folder"), ("user_attrs_wandb_url", "W&B")):
        if column in links:
            links[column] = [
                f'<a href="{html.escape(v)}">{label}</a>' if isinstance(v, str) and v else ""
                for v in links[column]
            ]
    parts.append(links.to_html(index=False, escape=False, na_rep=""))
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>study "
        f"{html.escape(study.study_name)}</title></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
    atomic_write(path, lambda tmp: tmp.write_text(page))
    return path


def atomic_write(path: Path, write) -> None:
    """write(tmp) to a temporary file of this process beside `path`, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
