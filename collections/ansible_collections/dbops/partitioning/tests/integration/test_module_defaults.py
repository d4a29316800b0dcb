"""A module called on its own takes the table spec's defaults (module_utils/spec.py).

batch_copy's own argument spec used to default verify_batches to false while the spec and
the playbook said true: a direct call copied without checking its batches. Now the default
has one source, so a direct call verifies every batch, and a twin that differs stops it.
"""
import json
import os
import subprocess
import sys

from ..helpers.paths import ROOT
from ..helpers.phase2_setup import TABLE, make_prepared, run, state_row

ANSIBLE = os.path.join(os.path.dirname(sys.executable), "ansible")


def run_module(pg, db, name, args, tmp_path):
    """``ansible localhost -m dbops.partitioning.<name>``: (return code, the module's result)."""
    args = dict(pg.module_params(db), **args)
    p = subprocess.run([ANSIBLE, "localhost", "-m", "dbops.partitioning." + name, "-a", json.dumps(args),
                        "-e", "ansible_python_interpreter=" + sys.executable],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
                       env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(tmp_path),
                                ANSIBLE_CALLBACK_RESULT_FORMAT="json"))
    return p.returncode, json.loads(p.stdout[p.stdout.index("=> {") + 3:])


def test_batch_copy_alone_verifies_its_batches(pg, db, conn, tmp_path):
    make_prepared(pg, db, rows=300)
    # A row in the twin that the original does not have in that version: the copy keeps the
    # twin's (ON CONFLICT DO NOTHING), so only the batch verification can notice.
    run(conn, "INSERT INTO public.revenues_partitioned SELECT id, occurred_at, region, amount + 1, note "
              "FROM public.revenues WHERE id = 150")
    rc, result = run_module(pg, db, "batch_copy", dict(table=TABLE, max_call_s=60), tmp_path)
    assert rc != 0, result
    assert "differs between the original and the twin" in result["msg"], result
    assert "Traceback" not in json.dumps(result)
    assert state_row(conn)["phase"] == "copying"


def test_verify_batches_false_in_the_spec_is_honoured(pg, db, conn, tmp_path):
    make_prepared(pg, db, rows=300)
    spec = dict(table=TABLE, partition_key="occurred_at", interval="monthly", verify_batches=False)
    rc, result = run_module(pg, db, "batch_copy", dict(spec=spec, max_call_s=60), tmp_path)
    assert rc == 0, result
    assert result["done"] and result["changed"], result
