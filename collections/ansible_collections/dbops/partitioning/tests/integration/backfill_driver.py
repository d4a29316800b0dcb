"""Drive phase 2 in-process, as batch_copy does, with the test hooks of module_utils."""
import time

from ansible_collections.dbops.partitioning.plugins.module_utils import backfill
from ansible_collections.dbops.partitioning.plugins.module_utils import state as st
from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
from ansible_collections.dbops.partitioning.plugins.module_utils.throttle import Limits

from .phase2_setup import STATE, TABLE, templates


def start(pg, db, workers=1):
    s = Session(pg.connect(db))
    try:
        st.ensure_state_schema(s, templates(), STATE)
        row = st.get_table(s, STATE, TABLE)
        ctx = backfill.load_context(s, STATE, row)
        if row["phase"] == "prepared":
            backfill.start_backfill(s, ctx, row, workers)
    finally:
        s.close()


def copy(pg, db, batch_size=500, workers=1, seconds=60, verify_batches=False, hooks=None, limits=None,
         target_ms=0, finish=True):
    """Start (if needed) and copy for up to ``seconds``; returns the call's totals."""
    start(pg, db, workers)
    s = Session(pg.connect(db))
    try:
        row = st.get_table(s, STATE, TABLE)
        ctx = backfill.load_context(s, STATE, row)
        opts = backfill.CopyOptions(batch_size=batch_size, batch_target_ms=target_ms, copy_workers=workers,
                                    verify_batches=verify_batches, limits=limits or Limits(0, 0, 0))
        totals = backfill.copy_for(s, lambda: Session(pg.connect(db)), templates(), ctx, opts,
                                   time.time() + seconds, hooks=hooks)
        if finish:
            totals["done"] = backfill.finish_if_done(s, ctx)
        return totals
    finally:
        s.close()
