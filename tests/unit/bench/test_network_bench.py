from __future__ import annotations

import random

from aos_gateway.bench import network as bench
from aos_gateway.network.planner import PlannerSettings


def test_instances_have_the_asked_size_and_a_feasible_shape() -> None:
    for family in bench.FAMILIES:
        p = bench.random_problem(random.Random(1), 25, 4, PlannerSettings(), family)
        assert p.candidates == 25 and len(p.roles) == 4
        for role in p.roles:
            fits = [o.fit for o in role.options]
            assert fits == sorted(fits, reverse=True) and sum(fits) <= 1.0 + 1e-9


def test_the_report_measures_the_ga_against_enumeration() -> None:
    report = bench.run(PlannerSettings(), instances=3, data=None)
    for family in bench.FAMILIES:
        for n in bench.SIZES:
            row = report["optimality"][family][str(n)]
            assert row["instances"] == 3 and row["candidates"] == n
            assert 0.0 <= row["gap_median"] <= row["gap_worst"] and row["gap_abs_worst"] >= 0.0
            assert row["plan_ms"]["p50"] > 0 and row["exhaustive_ms"]["p50"] > 0
    assert "tasks" not in report and "p95_ms_at_n50_over_target" in report["vs_targets"]
    assert "not measured" in bench.format_report(report)
