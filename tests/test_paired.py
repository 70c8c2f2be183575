"""Paired comparisons (fastvit.bench.paired) and interleaved rounds (fastvit.bench.rounds): the
statistics and the stopping rules, on made-up times and counted calls; no timing is asserted."""
import numpy as np
import pytest
import torch

from fastvit.bench.paired import NO_DIFFERENCE, Ratio, converged, paired_ratio, verdict
from fastvit.bench.rounds import Member, interleave, round_units


def test_the_ratio_is_the_median_of_per_round_ratios_with_an_interval_around_it():
    rng = np.random.default_rng(0)
    base = rng.uniform(1.0, 2.0, 60)  # a drifting machine: rounds differ by up to 2x
    slower = base * 1.5 * rng.normal(1.0, 0.01, 60)
    r = paired_ratio(slower, base)
    assert r.low <= r.value <= r.high and r.rounds == 60
    assert r.value == pytest.approx(np.median(slower / base))
    assert 1.47 < r.low and r.high < 1.53  # the drift cancels round by round
    assert verdict(r) == "slower" and verdict(paired_ratio(base, slower)) == "faster"
    assert paired_ratio(slower, base) == r  # seeded: the same rounds give the same interval


def test_words_follow_the_interval_and_the_noise_floor():
    same = Ratio(1.01, 0.99, 1.03, 20)
    assert verdict(same) == NO_DIFFERENCE  # the interval contains 1
    small = Ratio(1.02, 1.01, 1.03, 20)
    assert verdict(small) == "slower"
    noise = Ratio(1.0, 0.975, 1.035, 20)  # an A/A twin reaching 3.5% from 1
    assert noise.band == pytest.approx(0.035)
    assert verdict(small, noise) == NO_DIFFERENCE  # within the A/A spread
    assert verdict(Ratio(0.9, 0.88, 0.92, 20), noise) == "faster"


def test_rounds_missing_on_either_side_are_dropped_and_lengths_must_match():
    r = paired_ratio([2.0, None, 2.0, float("nan")], [1.0, 1.0, 1.0, 1.0])
    assert r.rounds == 2 and r.value == r.low == r.high == 2.0
    with pytest.raises(ValueError, match="equal in number"):
        paired_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="no round"):
        paired_ratio([None], [1.0])


def test_convergence_and_round_units():
    assert converged([Ratio(1.0, 0.99, 1.01, 20)]) and not converged([Ratio(1.0, 0.95, 1.05, 20)])
    assert not converged([Ratio(1.0, 0.99, 1.01, 9)])  # too few rounds for the interval to stop them
    assert converged([])
    baselines = [0, 0, 0, 1, None]  # 0 the group's baseline, 3 against 1, 4 compared with nothing
    draws = [round_units(baselines, {}, np.random.default_rng(7)) for _ in range(2)]
    assert draws[0] == draws[1]  # seeded
    rng = np.random.default_rng(7)
    units = [round_units(baselines, {}, rng) for _ in range(50)]
    for u in units:
        assert sorted(tuple(sorted(x)) for x in u) == [(0, 1), (0, 2), (1, 3), (4,)]
    assert len({tuple(u) for u in units}) > 5  # shuffled, each pair in either order
    assert {u[0] for r in units for u in r if len(u) == 2 and 0 in u} == {0, 1, 2}
    # a failed baseline leaves its members alone, a failed member leaves its baseline alone
    assert sorted(tuple(sorted(x)) for x in round_units(baselines, {1: None}, rng)) == [(0, 2), (3,), (4,)]


def _counting(calls, name, fail_at=None):
    def fn():
        calls.append(name)
        if fail_at is not None and calls.count(name) == fail_at:
            raise RuntimeError(f"{name} broke")
    return fn


def test_interleave_times_each_member_beside_its_baseline_after_untimed_warmups():
    """Warm-up rounds run members alone; each timed round runs every comparison as an adjacent pair, so
    a baseline with two members runs twice a round, its own time the first of the two, and each member
    keeps the baseline's time from its own pair."""
    calls, resets = [], []
    members = [Member(_counting(calls, "a"), lambda: resets.append(1), baseline=0, warmup=2),
               Member(_counting(calls, "b"), baseline=0), Member(_counting(calls, "c"), baseline=0)]
    out = interleave(members, torch.device("cpu"), min_rounds=4, max_rounds=4, time_budget=60.0, seed=1)
    assert out.stop == "max rounds" and out.rounds == 4 and out.seed == 1
    assert calls[:2] == ["a", "a"]  # warm-up: "a" alone
    assert calls.count("a") == 2 + 2 * 4 and calls.count("b") == calls.count("c") == 4 and len(resets) == 10
    assert [len(t) for t in out.times] == [4, 4, 4] and out.kernel == []
    assert out.beside[0] == [] and [len(t) for t in out.beside[1:]] == [4, 4]
    timed = calls[2:]
    for k in range(4):  # a round: two pairs, each "a" next to its member
        this = timed[4 * k:4 * k + 4]
        assert sorted(this[:2]) in (["a", "b"], ["a", "c"]) and sorted(this[2:]) in (["a", "b"], ["a", "c"])
    assert out.ratio(1, 0) == paired_ratio(out.times[1], out.beside[1])


def test_a_ratio_pairs_the_member_with_the_baseline_call_beside_it(monkeypatch):
    """A machine whose speed jumps from call to call but holds for two calls in a row: each member's
    ratio to its baseline pairs the two calls of one pair, and reads 1 exactly; the baseline's own time
    (its first call of the round) paired with a member's reads the jumps."""
    import fastvit.bench.rounds as rounds_module

    now, calls = [0.0], [0]
    monkeypatch.setattr(rounds_module, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: now[0])}))

    def work():
        calls[0] += 1
        now[0] += 1.0 + ((calls[0] - 1) // 2) % 3  # calls 1-2 take 1 s, 3-4 take 2 s, 5-6 take 3 s, ...

    members = [Member(work, baseline=0), Member(work, baseline=0), Member(work, baseline=0)]
    out = interleave(members, torch.device("cpu"), min_rounds=30, max_rounds=30, time_budget=1e12, seed=2,
                     target=-1.0)
    for i in (1, 2):
        r = out.ratio(i, 0)
        assert r.value == r.low == r.high == 1.0 and r.rounds == 30
        assert not all(x == y for x, y in zip(out.times[i], out.times[0]))


def test_interleave_stops_on_budget_or_convergence_and_drops_a_failing_member():
    calls = []
    members = [Member(_counting(calls, "a"), baseline=0), Member(_counting(calls, "b", fail_at=3), baseline=0),
               Member(_counting(calls, "c"), baseline=0)]
    out = interleave(members, torch.device("cpu"), min_rounds=3, max_rounds=1000, time_budget=0.0, seed=0,
                     target=-1.0)  # no interval is ever narrow enough: only the budget stops the rounds
    assert out.stop == "time budget" and out.rounds == 3  # the budget is spent: stop at the minimum
    assert isinstance(out.failed[1], RuntimeError) and len(out.times[1]) == 2 and calls.count("b") == 3
    assert out.ratio(1, 0) is None and len(out.times[2]) == 3 and out.ratio(2, 0) is not None
    alone = interleave([Member(_counting([], "a"), baseline=0)], torch.device("cpu"), min_rounds=5,
                       max_rounds=1000, time_budget=60.0, seed=0)
    assert alone.stop == "converged" and alone.rounds == 5  # nothing to compare: the minimum is enough


def test_drift_that_parts_unpaired_medians_cancels_in_the_paired_ratio(monkeypatch):
    """Two members doing the same work on a machine that slows down 3x over the run (a clock that
    advances more per call as calls go on): the first half of one member's rounds against the second
    half of the other's -- configurations measured minutes apart -- reads about 1.5x; interleaved,
    the paired ratio is 1 within a per cent, with an interval around it."""
    import fastvit.bench.rounds as rounds_module

    now, calls = [0.0], [0]
    monkeypatch.setattr(rounds_module, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: now[0])}))

    def work():
        calls[0] += 1
        now[0] += 1.0 + 2.0 * calls[0] / 120  # 120 calls: from 1 s a call to 3 s

    out = interleave([Member(work, baseline=0), Member(work, baseline=0)], torch.device("cpu"), min_rounds=60,
                     max_rounds=60, time_budget=1e12, seed=3, target=-1.0)
    a, b = out.times
    assert out.rounds == 60 and calls[0] == 120
    assert np.median(b[30:]) / np.median(a[:30]) > 1.4  # unpaired, apart in time: drift reads as a difference
    r = out.ratio(1, 0)
    assert abs(r.value - 1) < 0.01 and r.low <= 1 <= r.high


def test_short_calls_are_repeated_to_the_minimum_block_and_the_collector_is_off(monkeypatch):
    """A member whose warm-up call is shorter than ``min_block`` is timed over that many back-to-back
    calls per round (each after its reset), its round time the mean per call; a longer one once; the
    garbage collector is off during the rounds and on again after."""
    import gc

    import fastvit.bench.rounds as rounds_module
    from fastvit.bench.rounds import calls_for

    now, seen, resets = [0.0], {"short": 0, "long": 0}, [0]
    monkeypatch.setattr(rounds_module, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: now[0])}))

    def call(name, seconds):
        def fn():
            assert not gc.isenabled()
            seen[name] += 1
            now[0] += seconds
        return fn

    members = [Member(call("long", 0.5), baseline=0, warmup=1),
               Member(call("short", 0.001), lambda: resets.__setitem__(0, resets[0] + 1), baseline=0, warmup=1)]
    out = interleave(members, torch.device("cpu"), min_rounds=3, max_rounds=3, time_budget=1e9, seed=0,
                     min_block=0.02)
    assert gc.isenabled()
    assert out.calls == [1, 20]
    # the short member's count comes from a burst of min_block after its warm-up call
    assert seen == {"long": 1 + 3, "short": 1 + 20 + 3 * 20} and resets[0] == 1 + 20 + 3 * 20
    assert out.times[1] == [pytest.approx(0.001)] * 3 and out.times[0] == [pytest.approx(0.5)] * 3
    assert calls_for(0.001, 0.0) == 1 and calls_for(1e-7, 0.02) == rounds_module.MAX_CALLS


def test_a_slow_warm_up_call_does_not_set_the_count_and_a_twin_takes_its_baselines(monkeypatch):
    """The first calls run ten times slower (a cold start): the count comes from a burst's median call,
    not from the one slow warm-up call, and the A/A twin (the same function) gets its baseline's count."""
    import fastvit.bench.rounds as rounds_module

    now, n = [0.0], [0]
    monkeypatch.setattr(rounds_module, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: now[0])}))

    def work():
        n[0] += 1
        now[0] += 0.01 if n[0] <= 2 else 0.001

    other = lambda: now.__setitem__(0, now[0] + 0.002)  # noqa: E731
    members = [Member(work, baseline=0, warmup=1), Member(work, baseline=0, warmup=1),
               Member(other, baseline=0, warmup=1)]
    out = interleave(members, torch.device("cpu"), min_rounds=3, max_rounds=3, time_budget=1e9, seed=0,
                     min_block=0.02)
    assert out.calls[0] == out.calls[1] and out.calls[0] >= 15  # not the 2 of a 10 ms call
    assert out.calls[2] == 10
