"""The 95 % interval of a speedup (paired bootstrap, widened for small samples), interleaved rounds with
adaptive stopping, and the busy-machine rule. All deterministic: the bootstrap has a fixed seed."""

import math
import random

import pytest

from gpudiag.measure import load, rounds, stats


def test_interval_is_deterministic_and_brackets_the_ratio_of_medians():
    a = [100.0, 102.0, 98.0, 101.0, 99.0]
    b = [50.0, 51.5, 49.0, 50.5, 49.5]
    ci = stats.bootstrap_ratio_ci(a, b)
    assert ci == stats.bootstrap_ratio_ci(a, b)  # same samples, same interval
    assert ci[0] <= stats.ratio_of_medians(a, b) <= ci[1]


def test_pairing_cancels_load_that_hit_a_whole_round():
    # Round 3 was slowed for both contestants alike (a burst of load): paired, the ratio stays 2.
    base = [50.0, 50.5, 25.0, 49.5, 50.0, 50.2, 49.8]
    fast = [2 * x for x in base]
    paired = stats.bootstrap_ratio_ci(fast, base)
    unpaired = stats.bootstrap_ratio_ci(fast, base, paired=False)
    assert paired == (pytest.approx(2.0), pytest.approx(2.0))
    assert unpaired[1] - unpaired[0] > 0.05  # resampled independently, the burst widens it


def test_too_few_or_bad_samples_give_no_interval():
    assert stats.bootstrap_ratio_ci([1.0, 2.0], [1.0, 1.0]) is None  # fewer than 3 rounds
    assert stats.bootstrap_ratio_ci([1.0, 2.0, 3.0], [1.0, 0.0, 1.0]) is None
    assert stats.bootstrap_ratio_ci([1.0, float("nan"), 3.0], [1.0, 1.0, 1.0]) is None
    assert stats.ratio_of_medians([], [1.0]) is None and stats.ratio_of_medians([1.0], [0.0]) is None


def test_unequal_lengths_fall_back_to_unpaired():
    ci = stats.bootstrap_ratio_ci([10.0, 11.0, 9.0, 10.0], [5.0, 5.0, 5.0])
    assert ci[0] <= 2.0 <= ci[1]


def test_small_samples_are_widened_like_a_t_interval():
    assert stats.expanded_tail(5) == pytest.approx(0.00096, abs=2e-5)
    assert stats.expanded_tail(10) == pytest.approx(0.0086, abs=2e-4)
    assert 0.024 < stats.expanded_tail(500) < 0.025  # large samples: the plain 2.5 % percentiles
    assert stats.t975(4) == 2.776 and stats.t975(25) == pytest.approx(2.060, abs=0.01) and stats.t975(1000) == 1.96
    with pytest.raises(ValueError):
        stats.t975(0)


def test_coverage_on_simulated_rounds_is_near_95_percent():
    # 200 simulated tournaments, 7 rounds each, true speedup 1.5 with 6 % noise per contestant.
    rng = random.Random(42)
    hits = 0
    for i in range(200):
        base = [100 * math.exp(rng.gauss(0, 0.06)) for _ in range(7)]
        fast = [150 * math.exp(rng.gauss(0, 0.06)) for _ in range(7)]
        lo, hi = stats.bootstrap_ratio_ci(fast, base, resamples=1000, seed=i)
        hits += lo <= 1.5 <= hi
    assert hits >= 180  # >= 90 %: the widened percentile interval does not undercover at n=7


def test_rounded_interval_never_narrows():
    assert stats.rounded_interval((1.23456, 1.34561)) == [1.234, 1.346]
    assert stats.rounded_interval(None) is None
    assert stats.interval_width_ratio([1.0, 1.2]) == pytest.approx(1.2)
    assert stats.interval_width_ratio(None) is None


# ------------------------------------------------------------------ interleaved rounds

def test_rounds_rotate_the_order_and_stop_when_settled():
    seen = []
    out = rounds.run_rounds(["a", "b", "c"], seen.append, rounds.RoundsPlan(2, 10, 60.0),
                            settled=lambda: len(seen) >= 9)
    assert seen == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert out["rounds"] == 3 and out["stopped_because"] == rounds.TIGHT


def test_rounds_keep_going_to_the_minimum_even_when_settled():
    seen = []
    out = rounds.run_rounds(["a", "b"], seen.append, rounds.RoundsPlan(4, 10, 60.0), settled=lambda: True)
    assert out["rounds"] == 4 and len(seen) == 8


def test_rounds_stop_on_the_budget_and_the_deadline(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr(rounds.time, "monotonic", lambda: clock["t"])

    def once(key):
        clock["t"] += 1.0  # each measurement takes a second

    out = rounds.run_rounds(["a", "b"], once, rounds.RoundsPlan(2, 50, 7.0))
    assert out["rounds"] == 3 and out["stopped_because"] == rounds.BUDGET  # a 4th round would end at 8 s
    clock["t"] = 0.0
    out = rounds.run_rounds(["a", "b"], once, rounds.RoundsPlan(5, 50, 100.0), deadline=3.5)
    assert out["stopped_because"] == rounds.DEADLINE and out["rounds"] == 2
    # rounds so slow that the minimum would overrun the budget: three rounds still give an interval
    clock["t"] = 0.0
    out = rounds.run_rounds(["a", "b"], once, rounds.RoundsPlan(5, 50, 4.0))
    assert out["rounds"] == 3 and out["stopped_because"] == rounds.BUDGET


def test_failed_contestants_leave_the_rounds():
    seen = []
    out = rounds.run_rounds(["a", "b"], seen.append, rounds.RoundsPlan(3, 3, 60.0), active=lambda k: k != "b")
    assert seen == ["a", "a", "a"] and out["rounds"] == 3


# ------------------------------------------------------------------ a busy machine

def test_busy_means_the_widest_strategy_lacks_free_cores():
    assert load.machine_busy(0.5, 2, 2) and not load.machine_busy(0.4, 2, 2)
    assert not load.machine_busy(10.0, 16, 4) and load.machine_busy(12.5, 16, 4)
    assert load.machine_busy(0.6, None, 4) and not load.machine_busy(None, 2, 2)


def test_busiest_others_names_visible_processes_and_not_ours():
    before = {1: ("chrome", 10.0), 2: ("python", 5.0), 3: ("gpudiag", 1.0)}
    after = {1: ("chrome", 12.0), 2: ("python", 5.05), 3: ("gpudiag", 9.0), 4: ("hog", 3.0)}
    rows = load.busiest_others(before, after, wall_s=4.0, own={3})
    assert rows == [{"name": "hog", "cores": 0.75}, {"name": "chrome", "cores": 0.5}]


def test_cpu_meter_counts_its_own_work_as_not_other():
    meter = load.CpuMeter()
    r0 = meter.read()
    x = 0
    for i in range(300000):
        x += i * i
    r1 = meter.read()
    assert r0 is not None and r1 is not None
    assert meter.other_cores(r0, r1) >= 0.0 and meter.steal_cores(r0, r1) >= 0.0
    assert meter.other_cores(None, r1) is None


def test_a_rejected_round_does_not_count_and_is_run_again():
    seen, verdicts = [], iter([True, False, True, False, True])
    out = rounds.run_rounds(["a", "b"], seen.append, rounds.RoundsPlan(3, 3, 60.0), keep_round=lambda: next(verdicts))
    assert out["rounds"] == 3 and out["rejected"] == 2 and len(seen) == 10


def test_rounds_that_are_always_rejected_stop_and_say_so():
    out = rounds.run_rounds(["a"], lambda k: None, rounds.RoundsPlan(2, 3, 60.0), keep_round=lambda: False)
    assert out["rounds"] == 0 and out["rejected"] == 4 and out["stopped_because"] == rounds.REJECTED


def test_the_caller_may_allow_more_rejected_rounds_than_the_plan_has_rounds():
    kept = iter([False, False, True])
    out = rounds.run_rounds(["a"], lambda k: None, rounds.RoundsPlan(1, 1, 60.0), keep_round=lambda: next(kept),
                            max_rejected=2)
    assert (out["rounds"], out["rejected"]) == (1, 2)
    # by default the plan's max_rounds caps the rejected rounds
    kept = iter([False, False, True])
    out = rounds.run_rounds(["a"], lambda k: None, rounds.RoundsPlan(1, 1, 60.0), keep_round=lambda: next(kept))
    assert (out["rounds"], out["rejected"], out["stopped_because"]) == (0, 2, rounds.REJECTED)


# ------------------------------------------------------------------ the paired (sign-test) interval

def test_paired_interval_needs_six_rounds_and_spans_the_extremes_up_to_eight():
    a = [2.0, 2.1, 1.9, 2.0, 2.2]
    b = [1.0] * 5
    assert stats.paired_ratio_ci(a, b) is None  # 5 rounds: no 95 % interval exists from them
    a, b = a + [2.05], b + [1.0]
    assert stats.paired_ratio_ci(a, b) == (1.9, 2.2)  # 6 rounds: smallest to largest ratio
    assert [stats._sign_rank(n) for n in (6, 8, 9, 11, 12, 16)] == [1, 1, 2, 2, 3, 4]
    assert stats.paired_ratio_ci(a, b[:-1]) is None and stats.paired_ratio_ci(a, [0.0] + b[1:]) is None


def test_paired_interval_ignores_a_round_that_hit_both_and_one_extreme_round_from_nine_on():
    base = [100.0, 55.0, 101.0, 99.0, 100.0, 98.0, 102.0, 100.0, 97.0]  # round 2 slowed everything
    a = [x * 1.5 for x in base]
    a[5] *= 3  # one wild round of a alone
    lo, hi = stats.paired_ratio_ci(a, base)
    assert lo == pytest.approx(1.5) and hi == pytest.approx(1.5)


def test_paired_interval_covers_95_percent_even_where_the_rounds_are_bimodal():
    # Rounds of an intra-op loop that stalls now and then: 80 % scatter around 1.3, a fifth four times higher.
    # The median of that mixture is the lognormal's 0.5 / 0.8 = 62.5 % point.
    true_median = 1.3 * math.exp(0.05 * 0.31864)
    rng = random.Random(7)
    trials, covered = 600, 0
    for _ in range(trials):
        n = rng.choice([6, 7, 9, 12, 16])
        ratios = [1.3 * math.exp(rng.gauss(0, 0.05)) * (4.0 if rng.random() < 0.2 else 1.0) for _ in range(n)]
        lo, hi = stats.paired_ratio_ci(ratios, [1.0] * n)
        covered += lo <= true_median <= hi
    assert covered / trials >= 0.93  # 95 % or more in theory, whatever the distribution
