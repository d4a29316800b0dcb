# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which relation maintenance works on for a table spec, and whether it may.

A table of ``partitioning_tables`` is maintained when it is partitioned: by us (after the
switchover the table itself; before it, its twin ``<table>_partitioned``, which premake keeps
ready as phase 1 does), or by other means (a native partitioned table, range, list or hash).
A table that is not partitioned yet, or was rolled back, is skipped with the reason. What the
catalog says must match the spec (strategy and key): a mismatch is refused, never guessed.

``register`` keeps ``<state>.maintained_tables`` equal to the spec, so that the database
functions (the runbook's, the pg_cron job) follow the same settings as the playbook.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from dataclasses import dataclass
from typing import Optional, Tuple

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.bounds import parse_now
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_table
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import parse_column, qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.functions import functions_schema
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None

TWIN_PHASES = ("prepared", "copying", "copied", "verified")
# The options of a maintenance module beside table_module's (doc fragment maintained_table).
ARGUMENT_SPEC = dict(now=dict(type="str"))
_PARTKEY = re.compile(r"^(RANGE|LIST|HASH) \((.*)\)$", re.I)


def from_params(params):
    """(spec, state_schema, now) from a maintenance module's options (the table's whole spec, as the
    playbooks resolve it), validated before any connection."""
    raw = dict(params["spec"] or {})
    if params.get("table"):
        raw["table"] = params["table"]
    spec = normalize_spec(raw)
    return spec, params["state_schema"] or spec.state_schema, parse_now(params["now"])


class NotMaintained(Exception):
    """The table is not (or not yet) a partitioned table: nothing to maintain; ``reason`` says why."""

    def __init__(self, reason):
        super(NotMaintained, self).__init__(reason)
        self.reason = reason


@dataclass
class Target:
    spec: object                   # spec.TableSpec
    parent: Tuple[str, str]        # the partitioned relation (the twin before the switchover)
    phase: Optional[str]           # the migration's phase, None for a table we did not migrate
    strategy: str                  # as the catalog says: range | list | hash
    key_type: str

    @property
    def table_name(self):
        return self.spec.table_name

    @property
    def base(self):
        """Partitions are named <base>_<suffix>: the table's name, also on its twin."""
        return self.spec.name

    @property
    def label(self):
        return qualified(*self.parent)

    @property
    def display(self):
        """The table, and its twin when that is the partitioned one (before the switchover)."""
        return self.table_name if self.label == self.table_name else "%s (twin %s)" % (self.table_name, self.label)

    @property
    def retention_allowed(self):
        """Not while the migration's copies must stay equal: the twin and the original before the
        swap, the table and <table>_old during the soak (cleanup verifies them equal; rollback needs
        nothing more). Retention starts once cleanup is done, or at once on a table we did not migrate."""
        return self.phase in (None, "cleaned")

    @property
    def lock_budget_ms(self):
        return int(self.spec.tuning["lock_budget_ms"])

    @property
    def retries(self):
        return int(self.spec.tuning["swap_retries"])

    def regclass(self, session):
        return sql.Identifier(*self.parent).as_string(session.conn)


def resolve(session, spec, state_schema):
    """The Target of ``spec``; NotMaintained when there is nothing to maintain, PartitioningError
    when the table contradicts its spec."""
    row = state_store.get_table(session, state_schema, spec.table_name)
    phase = row["phase"] if row else None
    if phase == "rolled_back":
        raise NotMaintained("%s was rolled back: it is a plain table again" % spec.table_name)
    parent = (spec.schema, row["twin_relname"]) if phase in TWIN_PHASES else (spec.schema, spec.name)
    info = describe_table(session, *parent)
    if info is None:
        raise NotMaintained("%s does not exist" % qualified(*parent))
    if info.kind != "p":
        raise NotMaintained("%s is not partitioned yet (phases 1 to 3 partition it)" % qualified(*parent))
    m = _PARTKEY.match((info.partition_key or "").strip())
    columns = [c.strip() for c in m.group(2).split(",")] if m else []
    if not m or len(columns) != 1:
        raise PartitioningError("%s is partitioned by %s: only a single-column partition key is maintained."
                                % (qualified(*parent), info.partition_key))
    strategy = m.group(1).lower()
    try:
        key = parse_column(columns[0])
    except PartitioningError:
        raise PartitioningError("%s is partitioned by the expression %s: only a column is maintained."
                                % (qualified(*parent), columns[0]))
    problems = []
    if strategy != spec.strategy:
        problems.append("its spec says strategy %s but %s is partitioned by %s"
                        % (spec.strategy, qualified(*parent), strategy))
    if key != spec.partition_key:
        problems.append("its spec says partition_key %s but %s is partitioned by %s"
                        % (spec.partition_key, qualified(*parent), key))
    if problems:
        raise PartitioningError("%s: %s; correct partitioning_tables." % (spec.table_name, "; ".join(problems)))
    return Target(spec=spec, parent=parent, phase=phase, strategy=strategy, key_type=info.column(key).type)


def settings(target):
    """The row of ``maintained_tables`` for a target (also what the database functions read)."""
    spec = target.spec
    interval = spec.interval if spec.strategy == "range" else None
    return dict(table_name=spec.table_name, table_schema=spec.schema, table_relname=spec.name,
                strategy=spec.strategy, partition_key=spec.partition_key,
                interval=None if interval is None else str(interval),
                premake=spec.premake if spec.strategy == "range" else None, retention=spec.retention,
                retention_action=spec.retention_action, archive_schema=spec.tuning["archive_schema"],
                lock_budget_ms=target.lock_budget_ms, dump_required=bool(spec.tuning.get("retention_dump_dir")))


def register(session, state_schema, target):
    """Record the spec's maintenance settings where the database functions read them; True when
    they changed (never in check mode)."""
    wanted = settings(target)
    if state_store.installed_version(session, state_schema) < 3:
        return True                    # check mode on a database the functions are not installed in
    rows = session.query(sql.SQL("SELECT * FROM {} WHERE table_name = %s").format(
        sql.Identifier(state_schema, "maintained_tables")), (target.table_name,))
    if rows and all(rows[0][k] == v for k, v in wanted.items()):
        return False
    if session.check_mode:
        return True
    cols = sorted(wanted)
    session.execute(sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (table_name) DO UPDATE SET {}, "
                            "updated_at = now()").format(
        sql.Identifier(state_schema, "maintained_tables"), sql.SQL(", ").join(sql.Identifier(c) for c in cols),
        sql.SQL(", ").join(sql.Placeholder(c) for c in cols),
        sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in cols if c != "table_name")),
        wanted)
    return True


def while_held(session, table_name, result, work):
    """``work()`` holding the table's work lock (two runs never work on one table at once); when
    another run holds it, ``result`` says who and is returned, skipped."""
    holder = state_store.try_lock_table_work(session, table_name)
    if holder is not None:
        result.update(skipped=True, holder=holder,
                      msg="%s: skipped, another run is working on it (%s)" % (table_name,
                                                                              state_store.describe_holder(holder)))
        return result
    try:
        return work()
    finally:
        state_store.unlock_table_work(session, table_name)


def start(session, templates, spec, state_schema, result):
    """What a maintenance module works with: ``(target, schema of the functions to call, whether the
    recorded settings changed)``; None when there is nothing to maintain (``result`` says why)."""
    try:
        target = resolve(session, spec, state_schema)
    except NotMaintained as e:
        result.update(skipped=True, msg="%s: skipped, %s" % (spec.table_name, e.reason))
        return None
    result["partitioned_table"] = target.label
    fn_schema = functions_schema(session, templates, state_schema)
    return target, fn_schema, register(session, state_schema, target)
