"""The statistics against values computed elsewhere: R's t.test on its `sleep` data (Welch) and
the classic power-table sample sizes (Cohen 1988; G*Power gives the same)."""

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
