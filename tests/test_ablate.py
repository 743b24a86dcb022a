"""resnetf.ablate: the base and its variants over seeds, interleaved, skipped when finished,
and each variant's difference with its interval; bad input refused before anything is written."""

import pandas as pd
import pytest

from conftest import REPO, tiny_run_flags
from resnetf import ablate

EXPERIMENT = str(REPO / "experiments" / "oc_24ep.py")


def _tiny(data, runs) -> list[str]:
    return ["--", *tiny_run_flags(data, runs, "--epochs=1")]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "2", "--vary", "no_such=1"], "no_such: no such Config field"),
        (["--seeds", "2", "--vary", "batch_size=7.5"], "batch_size: '7.5' is not an integer"),
        (["--seeds", "2", "--vary", "max_lr=-1"], "vary max_lr=-1: max_lr: must be > 0"),
        (["--seeds", "2", "--vary", "label_smoothing=0.2"], "computes the same as base"),
        (["--seeds", "2", "--vary", "workers=3"], "computes the same as base"),
        (["--seeds", "2", "--vary", "cutout=0", "cutout=0.0"], "computes the same as cutout=0"),
        (["--seeds", "2", "--vary", "cutout"], "is not FIELD=VALUE"),
        (["--seeds", "1", "--vary", "cutout=0"], "an interval needs 2 seeds a side"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(args, message, tiny_data, tmp_path, capsys):
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as e:
        ablate.main([EXPERIMENT, *args, *_tiny(tiny_data, runs)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not runs.exists()


@pytest.mark.slow
def test_an_ablation_interleaves_its_runs_and_a_rerun_skips_the_finished(
    tiny_data, tmp_path, monkeypatch
):
    from resnetf import train

    runs, calls = tmp_path / "runs", []
    real = train.run

    def recorded(cfg, context, cifar):
        calls.append((cfg.cutout, cfg.label_smoothing, cfg.seed))
        return real(cfg, context, cifar)

    monkeypatch.setattr(train, "run", recorded)  # what every claimed run calls
    argv = [EXPERIMENT, "--seeds", "2", "--vary", "cutout=0", "label_smoothing=0,cutout=4"]
    table = ablate.main([*argv, *_tiny(tiny_data, runs)])
    # base s0, variant-1 s0, variant-2 s0, base s1, ...
    assert calls == [(8, 0.2, 0), (0, 0.2, 0), (4, 0.0, 0), (8, 0.2, 1), (0, 0.2, 1), (4, 0.0, 1)]
    (out,) = runs.glob("ablate_oc_24ep_*")
    saved = pd.read_csv(out / "ablation.csv")
    assert list(saved["variant"]) == ["base", "cutout=0", "label_smoothing=0.0,cutout=4"]
    assert (out / "ablation.png").stat().st_size > 5_000
    # the difference is the variant's mean minus the base's, over the runs' own summaries
    finals = {}
    for summary in runs.glob("oc_24ep_s*/summary.json"):
        config = pd.read_json(summary.parent / "config.json", typ="series")
        finals.setdefault(config["cutout"], []).append(pd.read_json(summary, typ="series"))
    base = sum(s["final_test_acc"] for s in finals[8]) / 2
    variant = sum(s["final_test_acc"] for s in finals[0]) / 2
    assert table.loc[1, "diff"] == pytest.approx(variant - base)
    assert table.loc[1, "ci_low"] <= table.loc[1, "diff"] <= table.loc[1, "ci_high"]
    assert table.loc[1, "n"] == table.loc[1, "n_base"] == 2
    # the same command again trains nothing and gives the same table
    calls.clear()
    again = ablate.main([*argv, *_tiny(tiny_data, runs)])
    assert calls == []
    pd.testing.assert_frame_equal(again, table)


@pytest.mark.slow
def test_a_variant_that_changes_no_training_has_a_paired_interval_of_width_zero(
    tiny_data, tmp_path, capsys
):
    """eval_every=0 changes when the run evaluates, not what it trains: with the same seeds on
    both sides every per-seed difference is 0, so the paired interval is exactly [0, 0] while
    Welch's only sees the seeds' spread."""
    argv = [EXPERIMENT, "--seeds", "3", "--vary", "eval_every=0"]
    table = ablate.main([*argv, *_tiny(tiny_data, tmp_path / "runs"), "--epochs=2"])
    row = table.iloc[1]
    assert row["design"] == "paired" and row["diff"] == 0
    assert row["paired_ci_low"] == row["paired_ci_high"] == 0 and row["paired_p_value"] == 1
    assert row["ci_high"] - row["ci_low"] > 0
    assert "paired" in capsys.readouterr().out


@pytest.mark.slow
def test_a_diverged_run_is_a_result_and_the_ablation_goes_on(tiny_data, tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = [EXPERIMENT, "--seeds", "2", "--vary", "max_lr=1e30"]
    table = ablate.main([*argv, *_tiny(tiny_data, runs), "--epochs=2"])
    assert list(table["n_diverged"]) == [0, 2] and list(table["n"]) == [2, 2]
    assert "diverged" in capsys.readouterr().err
    summaries = runs.glob("oc_24ep_s*/summary.json")
    statuses = sorted(pd.read_json(p, typ="series")["status"] for p in summaries)
    assert statuses == ["diverged", "diverged", "finished", "finished"]
    # a rerun counts the diverged runs as done
    again = ablate.main([*argv, *_tiny(tiny_data, runs), "--epochs=2"])
    assert len(list(runs.glob("oc_24ep_s*"))) == 4 and list(again["n_diverged"]) == [0, 2]
