"""The statistics against values computed elsewhere: R's t.test on its `sleep` data (Welch) and
the classic power-table sample sizes (Cohen 1988; G*Power gives the same)."""

import numpy as np
import pandas as pd
import pytest

from resnetf import stats

# R: t.test(extra ~ group, data = sleep)
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_welch_matches_r_on_the_sleep_data():
    # R prints: t = -1.8608, df = 17.776, p-value = 0.07939,
    # 95 percent confidence interval: -3.3654832 0.2054832 (for group 1 - group 2)
    d = stats.welch(SLEEP_2, SLEEP_1)  # mean(b) - mean(a): group 1 - group 2
    assert d.diff == pytest.approx(0.75 - 2.33)
    assert d.df == pytest.approx(17.776, abs=1e-3)
    assert d.p_value == pytest.approx(0.07939, abs=1e-5)
    assert (d.low, d.high) == pytest.approx((-3.3654832, 0.2054832), abs=1e-6)
    assert not d.resolved


def test_welch_needs_two_values_a_side():
    with pytest.raises(ValueError, match="at least 2 seeds a side"):
        stats.welch([0.9], [0.91, 0.92])


def test_identical_values_give_an_exact_difference():
    d = stats.welch([0.9, 0.9], [0.92, 0.92])
    assert d.low == d.high == pytest.approx(0.02) and d.p_value == 0 and d.resolved


@pytest.mark.parametrize("effect, n", [(1.0, 17), (0.5, 64), (0.8, 26)])
def test_seeds_needed_matches_the_power_tables(effect, n):
    # two-sided, alpha 0.05, power 0.8: n per group for Cohen's d = 1.0, 0.5, 0.8
    assert stats.seeds_needed(effect * 0.0019, 0.0019) == n


def test_seeds_needed_grows_as_the_difference_shrinks():
    assert stats.seeds_needed(0.002, 0.0019) > stats.seeds_needed(0.004, 0.0019)
    assert stats.seeds_needed(0.0, 0.0019) is None


def test_summarize_is_other_minus_base():
    row = stats.summarize([0.90, 0.91, 0.92], [0.93, 0.94, 0.95])
    assert row["diff"] == pytest.approx(0.03) and row["ci_low"] > 0
    assert row["n_base"] == row["n"] == 3 and row["seeds_needed"] >= 2


def test_paired_matches_r_on_the_sleep_data():
    # R: t.test(extra ~ group, data = sleep, paired = TRUE): the sleep data are paired by patient
    d = stats.paired(SLEEP_2, SLEEP_1)
    assert d.diff == pytest.approx(-1.58)
    assert (d.low, d.high) == pytest.approx((-2.4598858, -0.7001142), abs=1e-6)
    assert d.p_value == pytest.approx(0.002833, abs=1e-6) and d.df == 9


def test_each_test_agrees_with_scipy():
    from scipy import stats as scipy_stats

    rng = np.random.default_rng(1)
    a = rng.normal(0.90, 0.01, 9)
    b = a + rng.normal(0.003, 0.004, 9)
    mine, theirs = stats.paired(a, b), scipy_stats.ttest_rel(b, a)
    assert mine.p_value == pytest.approx(theirs.pvalue, rel=1e-9)
    assert (mine.low, mine.high) == pytest.approx(tuple(theirs.confidence_interval()), rel=1e-9)
    assert mine.correlation == pytest.approx(np.corrcoef(a, b)[0, 1])
    mine, theirs = stats.welch(a, b), scipy_stats.ttest_ind(b, a, equal_var=False)
    assert mine.p_value == pytest.approx(theirs.pvalue, rel=1e-9)
    assert (mine.low, mine.high) == pytest.approx(tuple(theirs.confidence_interval()), rel=1e-9)
    for target in (0.895, 0.9, 0.905):
        mine = stats.reaches(a, target)
        theirs = scipy_stats.ttest_1samp(a, target, alternative="greater")
        assert (mine.t, mine.p_value) == pytest.approx((theirs.statistic, theirs.pvalue), rel=1e-9)


def test_a_change_that_changes_nothing_has_a_paired_interval_of_width_zero():
    base = pd.Series([0.90, 0.93, 0.91], index=[0, 1, 2])
    row = stats.summarize(base, base.copy())
    assert row["design"] == "paired"
    assert row["paired_ci_low"] == row["paired_ci_high"] == 0 and row["paired_p_value"] == 1
    assert row["ci_high"] - row["ci_low"] > 0.05  # Welch sees only the seeds' spread


def test_summarize_pairs_only_the_same_seeds():
    base = pd.Series([0.90, 0.93, 0.91], index=[0, 1, 2])
    assert stats.summarize(base, pd.Series([0.91, 0.94, 0.92], index=[0, 1, 3]))["design"] == (
        "unpaired"
    )
    assert stats.summarize(list(base), [0.91, 0.94, 0.92])["design"] == "unpaired"
    shifted = stats.summarize(base, pd.Series([0.94, 0.92, 0.91], index=[1, 2, 0]))
    assert shifted["design"] == "paired" and shifted["diff"] == pytest.approx(0.01)
    assert shifted["paired_ci_low"] == pytest.approx(0.01)
    assert shifted["paired_ci_high"] == pytest.approx(0.01)


def test_reaching_a_target_is_one_sided_and_says_how_many_seeds_show_it():
    # 2000 runs with std 0.13 points whose mean is 0.0079 points above 94%: t = 2.718,
    # one-sided p = 0.0033 (t's tail at 1999 degrees of freedom)
    rng = np.random.default_rng(0)
    runs = rng.normal(0, 1, 2000)
    runs = 0.940079 + 0.0013 * (runs - runs.mean()) / runs.std(ddof=1)
    r = stats.reaches(runs, 0.94)
    assert r.t == pytest.approx(0.000079 / (0.0013 / 2000**0.5)) and r.n == 2000
    assert r.p_value == pytest.approx(0.0033, abs=1e-4)
    assert 1000 < r.seeds_needed < 2000  # d = 0.06 std: (1.645 + 0.84)^2 / 0.06^2 ~ 1700
    assert (
        stats.reaches(runs, 0.95).p_value > 0.99 and stats.reaches(runs, 0.95).seeds_needed is None
    )
    # one-sample power: d = 0.5 std needs 34 seeds two-sided (Cohen's table), 27 one-sided
    assert stats.seeds_needed(0.5, 1, samples=1) == 34
    assert stats.seeds_needed(0.5, 1, samples=1, sides=1) == 27


def test_the_mean_interval_and_upper_bound_on_a_known_case():
    from resnetf.stats import mean_interval, upper_bound

    # mean 0.91, sd 0.01 over 3: t(0.975, 2) = 4.3027, t(0.95, 2) = 2.9200
    low, high = mean_interval([0.90, 0.91, 0.92])
    assert (low, high) == pytest.approx((0.91 - 0.024842, 0.91 + 0.024842), abs=1e-6)
    assert upper_bound([0.90, 0.91, 0.92]) == pytest.approx(0.91 + 0.016859, abs=1e-6)
    assert upper_bound([0.9]) == float("inf")
