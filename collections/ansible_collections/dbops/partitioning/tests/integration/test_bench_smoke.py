"""The benchmark harness works: ``python -m bench --only trigger --quick`` with tiny settings.

Not a measurement (no numbers are checked: machines are noisy); it proves that
``make bench`` can start a server, build the table, install our sync trigger and the
hand-written one, run pgbench and write its results.
"""
import json
import os
import subprocess
import sys

import pytest

from lab.servers import available_bindirs

from ..helpers.paths import ROOT


@pytest.mark.skipif(18 not in available_bindirs() and 15 not in available_bindirs(),
                    reason="no PostgreSQL binaries installed")
def test_bench_trigger_quick_smoke(tmp_path):
    version = 18 if 18 in available_bindirs() else 15
    outdir = str(tmp_path)
    r = subprocess.run([sys.executable, "-m", "bench", "--only", "trigger", "--quick", "--pg", str(version),
                        "--duration", "1", "--rounds", "1", "--trigger-rows", "1000", "--clients", "2",
                        "--outdir", outdir], cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "trigger     ok" in r.stdout, r.stdout[-3000:]
    with open(os.path.join(outdir, "trigger.json")) as f:
        data = json.load(f)
    result = data[str(version)]
    for workload in ("insert", "update"):
        for variant in ("none", "ours", "hand"):
            assert result["median_tps"]["%s/%s" % (variant, workload)] > 0
    assert os.path.exists(os.path.join(outdir, "trigger.md"))
