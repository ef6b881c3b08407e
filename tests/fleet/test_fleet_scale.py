"""The fleet analysis at scale gives the verdicts of the straightforward one (issue 28).

Scores, leave-one-out medians and the peers' fair share are computed from sorted groups in
O(n log n) instead of one pass over the others per rank; here they are checked against the
straightforward definitions (written out below as the reference) on small random fleets, with ties,
missing noise and equal values, bit for bit.
"""

from __future__ import annotations

import math
import random

import pytest

from gpudiag.fleet import analysis, cpu_verdict, scores
from gpudiag.measure.stats import median


def reference_scores(values, higher_is_better, noise=None):
    """robust_scores as first written: every member's peers walked for their median, MAD and noise."""
    noise = noise or {}
    xs = {k: (math.log(v) if higher_is_better else -math.log(v)) for k, v in values.items()
          if scores._finite_positive(v)}
    if len(xs) < 2:
        return {}
    out = {}
    for k, x in xs.items():
        peers = [v for j, v in xs.items() if j != k]
        p = median(peers)
        mad = median([abs(v - p) for v in peers])
        peer_noise = median([n for j, n in noise.items() if j != k and j in xs and n is not None] or [0.0])
        own = noise.get(k) or 0.0
        scale = max(scores.MAD_TO_SIGMA * mad, math.hypot(own, peer_noise), scores.NOISE_FLOOR)
        deficit = p - x
        relative = math.exp(-deficit)
        score = deficit / scale
        peer_value = math.exp(p) if higher_is_better else math.exp(-p)
        out[k] = {"value": values[k], "peer_median": round(peer_value, 6), "relative": round(relative, 4),
                  "score": round(score, 2), "scale": round(scale, 4),
                  "flagged": score >= scores.Z_FLAG and (1 - relative) >= scores.MIN_EFFECT}
    return out


def _random_group(rng, n):
    values, noise = {}, {}
    levels = [rng.uniform(50, 150) for _ in range(3)]
    for k in range(n):
        kind = rng.random()
        if kind < 0.05:
            values[k] = rng.choice([None, 0.0, -1.0, float("nan")])  # unusable: left out of the scores
        elif kind < 0.25:
            values[k] = rng.choice(levels)  # ties
        else:
            values[k] = rng.uniform(80, 120) * (0.5 if rng.random() < 0.05 else 1.0)
        noise[k] = None if rng.random() < 0.2 else rng.choice([0.0, 0.01, rng.uniform(0.001, 0.1)])
    return values, noise


@pytest.mark.parametrize("seed", range(40))
def test_fast_scores_are_the_straightforward_ones(seed):
    rng = random.Random(seed)
    n = rng.choice([2, 3, 4, 5, 8, 9, 16, 33, 64])
    values, noise = _random_group(rng, n)
    for higher in (True, False):
        assert scores.robust_scores(values, higher, noise) == reference_scores(values, higher, noise)
        assert scores.robust_scores(values, higher) == reference_scores(values, higher)


def test_leave_one_out_median_and_mad_of_every_member():
    rng = random.Random(7)
    for n in (2, 3, 4, 7, 10, 31):
        vals = {k: float(rng.choice([1, 2, 2, 3, 5, 8, 13])) for k in range(n)}
        loo = scores.LeaveOneOut(vals)
        for k in vals:
            peers = [v for j, v in vals.items() if j != k]
            p = median(peers)
            assert loo.median(k) == p
            assert loo.mad(k) == median([abs(v - p) for v in peers])
    assert scores.median_of_others([None, 1.0, None]) == [1.0, None, 1.0]
    assert scores.median_of_others([2.0, 4.0, 9.0]) == [6.5, 5.5, 3.0]


def test_peers_fair_share_left_out_one_rank_or_a_whole_node():
    rng = random.Random(3)
    for _ in range(30):
        ranks = list(range(rng.randint(2, 40)))
        state = {r: {"fair_share": rng.choice([1.0, 0.5, 0.5, 0.33, 0.25, 0.0])} for r in ranks if rng.random() < 0.8}
        peers = cpu_verdict.PeerFair(ranks, state)
        for r in ranks:
            assert peers.without([r]) == cpu_verdict.fair_of([j for j in ranks if j != r], state)
        node = rng.sample(ranks, rng.randint(1, len(ranks)))
        assert peers.without(node) == cpu_verdict.fair_of([j for j in ranks if j not in node], state)


def _rank(r, host, rng, fair):
    def fig(v):
        return {"value": v, "p10": v * 0.99, "p90": v * 1.01, "n": 5, "what": "canned"}
    slow = 0.7 if r in (5, 23) else 1.0
    return {"rank": r, "host": host, "local_rank": r % 4,
            "device": {"kind": "cpu", "torch_threads": 1},
            "figures": {"matmul_gflops": fig(40.0 * rng.lognormvariate(0, 0.02) * slow),
                        "launch_us": fig(6.0 * rng.lognormvariate(0, 0.02)),
                        "h2d_gbps": fig(5.0 * rng.lognormvariate(0, 0.02) * (0.6 if host == "host-n3" else 1.0))},
            "cpu": {"share": fair * 0.97, "cores_got": fair * 0.97, "fair_share": fair, "cores": 1,
                    "job_cores": 1 - fair, "other_cores": 0.0, "job_ranks_sharing": [r + 1] if fair < 1 else []}}


def test_a_random_fleet_gets_the_reference_scores_and_verdict(monkeypatch):
    rng = random.Random(11)
    ranks = [_rank(r, f"host-n{r // 4}", rng, rng.choice([1.0, 1.0, 1.0, 0.5])) for r in range(32)]
    fast = analysis.analyze([dict(e) for e in ranks])
    monkeypatch.setattr(analysis, "robust_scores", reference_scores)

    class Reference(cpu_verdict.PeerFair):
        """PeerFair by walking the peers, as by_launch did."""

        def __init__(self, rs, state):
            self.rs, self.state = list(rs), state

        def without(self, gone):
            return cpu_verdict.fair_of([r for r in self.rs if r not in gone], self.state)

    monkeypatch.setattr(cpu_verdict, "PeerFair", Reference)
    slow = analysis.analyze([dict(e) for e in ranks])
    assert fast == slow
    # The planted slow ranks are outliers (stragglers, or shared_cores where the launch's sharing explains them),
    # and so is the slow node; the fleet mixes both kinds, so the fair-share path ran.
    assert {o["rank"] for o in fast["outliers"] if o["level"] == "rank"} >= {5, 23}
    assert {"straggler", "shared_cores"} <= {o["kind"] for o in fast["outliers"]}
    assert any(o["level"] == "node" and o["host"] == "host-n3" for o in fast["outliers"])
