"""The report benchmark works end to end: ``python -m bench reports`` at a tiny scale.

Not a measurement (no time is checked: machines are noisy). It proves that ``make bench`` can
build the seed-shaped table, partition it with our phases 1-3 (the product's code, not a
fallback), time the reports on both sides, show the pruning in the plans, build phase 4's
indexes online, remove a year both ways with the same rows left, and write its results.
"""
import json
import os
import subprocess
import sys

import pytest

from lab.servers import available_bindirs

from ..helpers.paths import ROOT


# Every installed version: the indexes and queries must be valid on each (an index expression
# immutable on 18 is not always on 15).
@pytest.mark.parametrize("version", [v for v in (18, 15) if v in available_bindirs()])
def test_bench_reports_tiny_smoke(tmp_path, version):
    outdir = str(tmp_path)
    r = subprocess.run([sys.executable, "-m", "bench", "reports", "--quick", "--pg", str(version),
                        "--report-rows", "4000", "--report-rounds", "1", "--report-reps", "1",
                        "--report-budget-ms", "1", "--outdir", outdir],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "reports     ok" in r.stdout, r.stdout[-3000:]
    with open(os.path.join(outdir, "reports.json")) as f:
        result = json.load(f)[str(version)]

    assert result["build"]["phase1_by"].startswith("module_utils/prepare/prepare_table.py")
    assert result["build"]["rows_copied"] == 4000
    for stage in ("phase3", "phase4", "control"):
        for case in ("daily", "daily_mid_org", "monthly", "monthly_mid_org", "cross_org"):
            for mode in ("literal", "prepared", "prepared_custom"):
                m = result[stage][case][mode]
                assert m["base_ms"] > 0 and m["other_ms"] > 0, (stage, case, mode)
    # Pruning: a literal report scans exactly one quarter of the partitioned table.
    for case, quarter in (("daily", "revenues_2025_q4"), ("cross_org", "revenues_2025_q3")):
        assert result["plans"]["phase3"][case]["partitioned"]["literal"]["relations"] == [quarter]
    # The primary key grew by the partition key; phase 4 added its indexes on every partition.
    assert "(id, occurred_at)" in result["sizes"]["partitioned"]["indexes"][0]["definition"]
    added = set(ix["index"] for ix in result["sizes"]["phase4"]["indexes"]) - \
        set(ix["index"] for ix in result["sizes"]["partitioned"]["indexes"])
    assert added == set(ix["name"] for ix in result["phase4_indexes"])
    # A year removed both ways leaves the same rows (the benchmark checks the counts itself too).
    retention = result["retention"]
    assert [s["quarter"] for s in retention["steps"]] == ["2023 Q%d" % q for q in (1, 2, 3, 4)]
    assert retention["total"]["rows"] > 0 and retention["rows_left"] == 4000 - retention["total"]["rows"]
    for name in ("reports.md", "reports_plans.md", "reports.png", "summary.md"):
        assert os.path.exists(os.path.join(outdir, name)), name
