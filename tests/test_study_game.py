"""The speedrun game as a study (resnetf.tune): the cheapest config whose mean accuracy holds a
floor, searched under seed noise. The studies here run the real study path (storage, sampler,
pruner, constraints, the answer, the trials table) with training replaced by a known function of
the trial's point and seed, so what is pruned, what is trained and what is the answer are
known: a trial that clearly loses is pruned after 1 seed; a cheap infeasible trial is never the
answer; a trial that cannot win on compute never trains; the experiment's own config is trial
0; every sampler replays from its seed."""

import pandas as pd
import pytest
import yaml

from resnetf import tune as tuning


def _space(tmp_path, **parameters):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"program": "x.py", "parameters": parameters}))
    return str(path)


class FakeTraining:
    """run(cfg, context, cifar) of a trial: a summary whose validation accuracy is
    `acc(cfg) + 0.001 x seed`, each call recorded as (trial number, seed)."""

    def __init__(self, acc):
        self.acc, self.calls = acc, []

    def __call__(self, cfg, context=None, cifar=None):
        cfg.validate()  # what run() does first: a trial's config must be one a run takes
        self.calls.append(((context.extra_config if context else {}).get("trial"), cfg.seed))
        return {
            "status": "finished",
            "final_val_acc": self.acc(cfg) + 0.001 * cfg.seed,
            "final_test_acc": self.acc(cfg),
            "train_seconds": 1.0,
            "run_dir": None,
        }

    def runs_of(self, trial: int) -> int:
        return sum(1 for t, _ in self.calls if t == trial)


# a constrained study whose every point holds the floor: cost = max_lr, accuracy 0.95 (+ seeds)
CONSTRAINED = dict(
    acc=lambda c: 0.95,
    cost=lambda c: c.max_lr,
    trial_seeds=2,
    objectives="pflop",
    min_val_acc=0.9,
)


def _study(tiny_cfg, tmp_path, monkeypatch, acc, cost=None, **changes):
    training = FakeTraining(acc)
    monkeypatch.setattr(tuning, "run", training)
    if cost is not None:
        monkeypatch.setattr(tuning, "trial_pflop", lambda tcfg, cifar: cost(tcfg))
    space = _space(tmp_path, max_lr={"min": 0.1, "max": 1.0})
    cfg = tiny_cfg.replace(val_size=20, sweep=space, **changes)
    return tuning.tune(cfg), training


@pytest.mark.slow
def test_a_trial_that_clearly_loses_is_pruned_after_one_seed(tiny_cfg, tmp_path, monkeypatch):
    study, training = _study(
        tiny_cfg,
        tmp_path,
        monkeypatch,
        acc=lambda c: c.max_lr,  # seed s adds 0.001 s: the same for every trial
        tune=16,
        trial_seeds=3,
        sampler="random",
    )  # --pruner auto: successive halving over seeds, keeping the better half at each rung
    trials = study.get_trials(deepcopy=False)
    # a trial whose first seed is worse than every earlier trial's clearly loses
    losers = [
        t
        for k, t in enumerate(trials)
        if k >= 2 and t.params["max_lr"] < min(e.params["max_lr"] for e in trials[:k])
    ]
    assert losers, "the seeded random points gave no clear loser: change the seed"
    for t in losers:
        assert t.state.name == "PRUNED" and training.runs_of(t.number) == 1
        assert t.user_attrs["pruned_because"].startswith("halving after 1 of 3 seeds")
    assert len(training.calls) < 16 * 3
    table = tuning.trials_table(study)
    assert "user_attrs_pruned_because" in table and "user_attrs_seed_values" in table


@pytest.mark.slow
def test_a_constrained_study_answers_the_cheapest_feasible_trial(
    tiny_cfg, tmp_path, monkeypatch, capsys
):
    # cost grows with max_lr; only max_lr >= 0.5 holds the floor of 0.9: below 0.3 the accuracy
    # is far below it (the bound prunes), in between just below it (0.898-0.900 over the seeds:
    # the bound cannot tell, the trial completes infeasible, cheaper than any feasible one)
    study, training = _study(
        tiny_cfg,
        tmp_path,
        monkeypatch,
        acc=lambda c: 0.95 if c.max_lr >= 0.5 else 0.898 if c.max_lr >= 0.3 else 0.80,
        cost=lambda c: c.max_lr,
        tune=16,
        trial_seeds=3,
        objectives="pflop",
        min_val_acc=0.9,
        sampler="random",
    )
    trials = study.get_trials(deepcopy=False)
    best = tuning.cheapest_feasible(study)
    assert best is not None and best.params["max_lr"] >= 0.5  # never a cheap infeasible one
    feasible = [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs["feasible"]]
    assert best.value == min(t.value for t in feasible)
    traps = [t for t in trials if t.state.name == "COMPLETE" and not t.user_attrs["feasible"]]
    assert traps and min(t.value for t in traps) < best.value  # cheaper, and not the answer
    assert f"cheapest feasible trial {best.number}" in capsys.readouterr().out
    for t in trials:
        because = t.user_attrs.get("pruned_because", "")
        if because.startswith("cannot win"):  # its compute was known: it never trained
            assert training.runs_of(t.number) == 0
        if because.startswith("infeasible"):  # the upper bound after 2 seeds
            assert training.runs_of(t.number) == 2 and t.params["max_lr"] < 0.5
    reasons = [t.user_attrs.get("pruned_because", "")[:10] for t in trials]
    assert "cannot win" in reasons and "infeasible" in reasons
    # the feasibility is Optuna's own constraint too: what TPE, GP and NSGA-II read
    assert all(t.constraints == {"min_val_acc": 0.9 - t.user_attrs["val_acc"]} for t in feasible)


def test_the_experiments_own_config_is_trial_zero(tiny_cfg, tmp_path, monkeypatch):
    study, _ = _study(tiny_cfg, tmp_path, monkeypatch, acc=lambda c: 0.5, tune=2, pruner="none")
    first = study.trials[0]
    assert first.params == {"max_lr": tiny_cfg.max_lr} and first.user_attrs["start_point"]


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["tpe", "gp", "random"])
def test_every_sampler_replays_a_study_from_its_seed(sampler, tiny_cfg, tmp_path, monkeypatch):
    points = []
    for k in range(2):
        cfg = tiny_cfg.replace(runs_dir=str(tmp_path / str(k)))
        study, _ = _study(
            cfg, tmp_path, monkeypatch, acc=lambda c: c.max_lr / 2, tune=4, sampler=sampler
        )
        points.append([t.params for t in study.trials])
    assert points[0] == points[1] and len({p["max_lr"] for p in points[0]}) == 4


@pytest.mark.slow
def test_a_constrained_answer_is_retrained_over_seeds_with_the_one_sided_test(
    tiny_cfg, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr("resnetf.claims.run_claimed", lambda cfg, cifar: (_summary(cfg), "ran"))
    study = dict(tune=3, retrain_best=True, seeds=3, target_acc=0.9)
    _study(tiny_cfg, tmp_path, monkeypatch, **CONSTRAINED, **study)
    out = capsys.readouterr().out
    assert "over 3 seeds" in out and "one-sided t-test" in out


def _summary(cfg):
    acc = 0.95 + 0.001 * cfg.seed
    return {
        "status": "finished",
        "final_test_acc": acc,
        "final_val_acc": None,
        "train_seconds": 1.0,
        "run_dir": ".",
        "epochs_done": 1,
        "wandb_id": None,
    }


def test_the_trials_table_shows_feasibility_and_the_interval(tiny_cfg, tmp_path, monkeypatch):
    study, _ = _study(tiny_cfg, tmp_path, monkeypatch, **CONSTRAINED, tune=2)
    table = pd.read_csv(tuning.trials_csv_path(tiny_cfg, study.study_name))
    # seeds 0 and 1 give 0.950 and 0.951: mean 0.9505, the t interval (t 12.706 at 1 df) is
    # 0.9505 +- 12.706 x 0.000707 / sqrt 2 = +- 0.006353, and both trials hold the floor
    done = table[table["state"] == "COMPLETE"]  # a dearer second trial is pruned: cannot win
    assert len(done) >= 1 and done["user_attrs_feasible"].all()
    assert done["user_attrs_val_acc"].tolist() == pytest.approx([0.9505] * len(done))
    assert done["user_attrs_val_acc_ci_low"].tolist() == pytest.approx([0.944147] * len(done))
    assert done["user_attrs_val_acc_ci_high"].tolist() == pytest.approx([0.956853] * len(done))


def test_a_journal_cut_mid_line_is_repaired_before_any_worker_writes_and_the_study_goes_on(
    tiny_cfg, tmp_path, monkeypatch, capsys
):
    import hashlib

    journal = tmp_path / "study.log"
    flags = dict(tune=2, pruner="none", storage=str(journal))
    _study(tiny_cfg, tmp_path, monkeypatch, acc=lambda c: 0.5, **flags)
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-7])  # a writer killed in the middle of its last line
    cut = hashlib.sha256(journal.read_bytes()).hexdigest()
    capsys.readouterr()
    study, _ = _study(tiny_cfg, tmp_path, monkeypatch, acc=lambda c: 0.5, **{**flags, "tune": 4})
    assert "ended in a line cut short" in capsys.readouterr().out
    (kept,) = tmp_path.glob("study.log.cut-*")
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == cut  # the original, untouched
    # the cut line was trial 1's last word (its end): it reads RUNNING; the study went on past it
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) >= 3
    # and it opens again afterwards: nothing was appended after a partial line
    again, _ = _study(tiny_cfg, tmp_path, monkeypatch, acc=lambda c: 0.5, **{**flags, "tune": 4})
    assert len(again.trials) == len(study.trials)
