"""The molecule scenarios (molecule/), each as `make test-molecule` runs it, on throwaway lab servers:
``default`` (phases 1-3, then the idempotence step - every phase again, changed=0 - and the
verifier), ``rollback`` (phases 1-3, then rollback, rollback again with changed=0, verify) and
``multi_host`` (three servers, one stopped: a canary roll-out, its recap, the re-run; verify)."""
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest

from lab.servers import free_port

from ..helpers.paths import ROOT

SCENARIOS = {"default": ("idempotence", "verify"), "rollback": ("idempotence", "verify"),
             "multi_host": ("converge", "verify")}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_molecule_scenario(scenario):
    bindir = os.path.dirname(sys.executable)
    molecule = os.path.join(bindir, "molecule")
    if not os.path.exists(molecule):
        pytest.skip("molecule is not installed in this Python environment")
    lab_dir = os.path.join(tempfile.gettempdir(), "dbops-molecule-" + uuid.uuid4().hex[:8])
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""), MOLECULE_LAB_DIR=lab_dir,
               LAB_PORT=str(free_port()), LAB_ROWS="3000", ANSIBLE_FORCE_COLOR="0", NO_COLOR="1")
    try:
        run = subprocess.run([molecule, "test", "-s", scenario], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=1800, check=False)
    finally:
        shutil.rmtree(lab_dir, ignore_errors=True)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    for step in SCENARIOS[scenario]:
        assert "%s > %s: Executed: Successful" % (scenario, step) in output, output[-3000:]
