"""Drive phase 2 in-process, as batch_copy does, with the test hooks of module_utils."""
import atexit
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from ansible_collections.dbops.partitioning.plugins.module_utils.migrate import backfill
from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate.throttle import Limits
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import resolve_tuning

from .paths import MODULES, ROOT
from .phase2_setup import STATE, TABLE, templates


def start(pg, db, workers=1):
    s = Session(pg.connect(db))
    try:
        state_store.ensure_state_schema(s, templates(), STATE)
        row = state_store.get_table(s, STATE, TABLE)
        ctx = backfill.load_context(s, STATE, row)
        if row["phase"] == "prepared":
            backfill.start_backfill(s, templates(), ctx, row, workers)
    finally:
        s.close()


def copy(pg, db, batch_size=500, workers=1, seconds=60, verify_batches=False, hooks=None, limits=None,
         target_ms=0, finish=True):
    """Start (if needed) and copy for up to ``seconds``; returns the call's totals."""
    start(pg, db, workers)
    s = Session(pg.connect(db))
    try:
        row = state_store.get_table(s, STATE, TABLE)
        ctx = backfill.load_context(s, STATE, row)
        opts = dataclasses.replace(backfill.CopyOptions.from_tuning(resolve_tuning()), batch_size=batch_size,
                                   batch_target_ms=target_ms, copy_workers=workers, verify_batches=verify_batches,
                                   limits=limits or Limits(0, 0, 0))
        totals = backfill.copy_for(s, lambda: Session(pg.connect(db)), templates(), ctx, opts,
                                   time.time() + seconds, hooks=hooks)
        if finish:
            totals["done"] = backfill.finish_if_done(s, ctx)
        return totals
    finally:
        s.close()


# --- the real modules in a subprocess (to kill them, and to see what an operator sees) --------

_DIRS = []
atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in _DIRS])


def module_process(name, pg, db, check_mode=False, **args):
    """Start ``plugins/modules/<name>.py`` as Ansible would (args file); returns the Popen."""
    d = tempfile.mkdtemp(prefix="e5mod-")
    params = dict(pg.module_params(db), **args)
    params["_ansible_check_mode"] = check_mode
    path = os.path.join(d, "args.json")
    with open(path, "w") as f:
        json.dump({"ANSIBLE_MODULE_ARGS": params}, f)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "collections"), ROOT]))
    p = subprocess.Popen([sys.executable, os.path.join(MODULES, name + ".py"), path], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, cwd=d)
    _DIRS.append(d)  # removed at exit (the module reads its args file only at start)
    return p


def run_module(name, pg, db, check_mode=False, timeout=300, **args):
    """Run a module to its end; returns its JSON result (``failed`` set when it failed)."""
    p = module_process(name, pg, db, check_mode=check_mode, **args)
    out, err = p.communicate(timeout=timeout)
    try:
        return json.loads(out)
    except ValueError:
        raise AssertionError("module %s printed no JSON: %s %s" % (name, out[-2000:], err[-2000:]))
