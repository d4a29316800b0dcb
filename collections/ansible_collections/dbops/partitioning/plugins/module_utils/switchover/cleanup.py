# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cleanup after a switchover (docs/runbooks/cleanup.md): drop ``<table>_old`` and the reverse sync.

Refused unless the table is in phase 'switched', the soak time since ``switched_at`` has
elapsed, and a verification *after* the switch passes now: the new table and ``<table>_old``
are compared (count and checksum) in one repeatable-read snapshot — the reverse sync writes
both in the application's transactions, so they must be equal even under load. A
``pg_dump`` of ``<table>_old`` can be written first (``dump_dir``). Then, in one transaction
under a short lock timeout with retries (DROP TRIGGER locks the application's table): drop the
reverse-sync triggers and function, drop ``<table>_old``, phase 'cleaned'.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils import sync
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_relation
from ansible_collections.dbops.partitioning.plugins.module_utils.compare import compare_for_swap
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.dumps import dump_table
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import parse_table, qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.locking import run_with_lock_retry
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover.pair import capture

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None


def cleanup(session, table, *, state_schema, lock_timeout_ms, swap_retries, params=None, min_soak_s=0, dump_dir=None,
            pg_dump=None):
    schema, name = parse_table(table)
    table_name = qualified(schema, name)
    row = state_store.get_table(session, state_schema, table_name)
    if row is None:
        raise PartitioningError("%s is not being migrated (no state row): nothing to clean up." % table_name)
    if row["phase"] == "cleaned":
        return dict(changed=False, table=table_name, phase="cleaned", msg="%s is already cleaned up." % table_name)
    if row["phase"] != "switched":
        raise PartitioningError("Cleanup of %s refused: it is in phase %r; cleanup comes after the switchover "
                                "(phase 'switched') and drops the original." % (table_name, row["phase"]))
    state_store.lock_table_work(session, table_name)
    old = row["old_relname"]
    soaked = session.scalar("SELECT extract(epoch FROM now() - %s)::float8", (row["switched_at"],))
    if soaked is None or soaked < float(min_soak_s):
        raise PartitioningError("Cleanup of %s refused: switched %.0f s ago, the soak time is %s s (cleanup_min_soak_s "
                                "/ partitioning_soak_hours); run again later." % (table_name, soaked or 0, min_soak_s))
    done = []
    check = None
    old_rel = describe_relation(session, schema, old)
    if old_rel is not None:
        pair = capture(session, schema, name, old)
        # the columns both hold (DDL on the new table since the switchover is not carried to _old)
        cols = [c for c in pair.active.stored_columns if c in pair.standby.stored_columns]
        check = compare_for_swap(session, state_schema, table_name, (schema, name), (schema, old), cols,
                                 pair.standby.pk_columns)
        if not check["equal"]:
            raise PartitioningError("Cleanup of %s refused: the verification after the switch found %s and %s "
                                    "different (rows %d vs %d); investigate before dropping anything (rollback.yml "
                                    "still works)." % (table_name, table_name, qualified(schema, old),
                                                       check["rows_a"], check["rows_b"]), verification=check)
        if dump_dir:
            if session.check_mode:
                done.append("would write a pg_dump of %s to %s" % (qualified(schema, old), dump_dir))
            else:
                done.append("pg_dump written to %s" % dump_table(session, params or {}, schema, old, dump_dir, pg_dump))
    reverse = sync.sync_triggers(session, (schema, name))
    stmts = [sync.lock_in_writers_order((schema, name), (schema, old) if old_rel is not None else None)]
    stmts += sync.drop_statements(reverse)
    if old_rel is not None:
        stmts.append(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, old)))

    def work(s):
        for stmt in stmts:
            s.execute(stmt)
        verification = dict(status="ok", after_switch=check) if check else row.get("verification")
        state_store.update_table(s, state_schema, table_name, phase="cleaned", verification=verification)
    run_with_lock_retry(session, work, lock_timeout_ms, swap_retries, relations=[(schema, name), (schema, old)],
                        what="dropping the reverse sync and %s" % qualified(schema, old))
    done.append("reverse sync dropped" if reverse else "no reverse sync left")
    if old_rel is not None:
        done.append("%s dropped" % qualified(schema, old))
    state_store.record_run(session, state_schema, table_name, "cleanup", details=dict(done=done))
    return dict(changed=True, table=table_name, phase="cleaned", verification=check, done=done,
                msg="%s cleaned up: %s" % (table_name, "; ".join(done)))
