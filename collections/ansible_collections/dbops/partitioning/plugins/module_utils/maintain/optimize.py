# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Phase 4 of a table: the spec's partition-specific indexes built online, then ANALYZE.

``optimize(session, spec, state_schema)`` works on the partitioned table after the switchover (or a
table partitioned by other means); before the switchover it refuses and names the playbook to
run. It holds the table's work lock (state.lock_table_work), so that it never runs beside a phase
or maintenance of the same table.

Every entry of ``indexes:`` is first **probed**: ``CREATE INDEX`` on an empty temporary table
with the table's columns (``CREATE TEMP TABLE ... (LIKE table)``), in a transaction that is always
rolled back. So the server parses the operator's expressions and predicate (fragments.py let only
self-contained text through), checks the method, operator classes and storage parameters, and
deparses the index; what is built on the table is that deparsed model, never the operator's text.
The same model tells whether an index of that name on the table is already the one the spec
asks for (done), or another one (refused, naming both definitions).

The build itself is indexes.build_online (HP16). ANALYZE follows where the planner lacks
statistics: the whole table after an index was built (an expression index needs statistics of
its expression) or when the partitioned table has none of its own (autovacuum never analyzes a
partitioned parent); otherwise each partition that holds rows and was never analyzed. A second
run finds everything in place and changes nothing.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import Index, describe_table, index_is_valid
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.indexes import (
    build_online, index_statement, run_without_timeouts)
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain import target

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    psycopg2 = None
    sql = None

PROBE_TABLE = "dbops_index_probe"


def partitioned_relation(session, spec, state_schema):
    """(schema, name) of the table phase 4 works on (maintenance's target.resolve, which also checks
    the catalog against the spec); PartitioningError, with what to run, when it is not partitioned
    yet (before the switchover the partitioned relation is the twin, which the migration keeps equal
    to the original: phase 4 waits for the switchover) or not any more."""
    row = state_store.get_table(session, state_schema, spec.table_name)
    phase = row["phase"] if row else None
    if phase in target.TWIN_PHASES:
        raise PartitioningError("%s is in phase %s: phase 4 runs after the switchover (playbooks/phase3_switchover.yml); "
                                "nothing was changed." % (spec.table_name, phase))
    try:
        return target.resolve(session, spec, state_schema).parent
    except target.NotMaintained as e:
        raise PartitioningError("%s: phase 4 works on a partitioned table (phases 1 to 3 partition it); nothing was "
                                "changed." % e.reason)


# --------------------------------------------------------------------------- the probe

def _spec_model(conn, index):
    """The index as the operator wrote it (an ``Index`` for index_statement): only ever rendered
    for the probe's temporary table."""
    specs = []
    for e in index.elements:
        text = sql.Identifier(e.column).as_string(conn) if e.column is not None else "(%s)" % e.expression
        specs.append(("%s %s" % (text, e.order)).strip())
    return Index(name=index.name, oid=0, definition="", is_unique=False, is_primary=False, constraint_name=None,
                 constraint_type=None, method=index.using, key_columns=[e.column for e in index.elements],
                 key_definitions=[], include_columns=list(index.include),
                 predicate="(%s)" % index.where if index.where else None,
                 reloptions=["%s=%s" % kv for kv in sorted(index.with_.items())], tablespace=None, is_valid=True,
                 comment=None, key_specs=specs)


def probe(session, table, index, lock_timeout_ms):
    """The server's model of ``index`` (an index_spec.IndexSpec) on ``table``'s columns: built on
    an empty temporary copy in a transaction that is rolled back. PartitioningError when
    PostgreSQL refuses it."""
    conn = session.conn
    cur = conn.cursor()
    conn.autocommit = False
    try:
        cur.execute("SET LOCAL standard_conforming_strings = on")
        cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal("%dms" % int(lock_timeout_ms))))
        cur.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(
            sql.Identifier(PROBE_TABLE), sql.Identifier(*table)))
        cur.execute("SELECT nspname FROM pg_catalog.pg_namespace WHERE oid = pg_catalog.pg_my_temp_schema()")
        temp = cur.fetchone()[0]
        try:
            cur.execute(index_statement((temp, PROBE_TABLE), index.name, _spec_model(conn, index)))
        except psycopg2.Error as e:
            raise PartitioningError("%s: index %s of the spec's indexes: PostgreSQL refuses it: %s"
                                    % (qualified(*table), index.name, (e.pgerror or str(e)).strip().splitlines()[0]))
        model = [ix for ix in describe_table(session, temp, PROBE_TABLE).indexes if ix.name == index.name][0]
    finally:
        cur.close()
        conn.rollback()
        conn.autocommit = True
    return model


def _shape(ix):
    return (ix.method, list(ix.key_specs), list(ix.include_columns), ix.predicate, sorted(ix.reloptions),
            ix.is_unique)


def _definition(ix):
    return "USING %s (%s)%s%s%s" % (ix.method, ", ".join(ix.key_specs),
                                    " INCLUDE (%s)" % ", ".join(ix.include_columns) if ix.include_columns else "",
                                    " WITH (%s)" % ", ".join(ix.reloptions) if ix.reloptions else "",
                                    " WHERE %s" % ix.predicate if ix.predicate else "")


# --------------------------------------------------------------------------- indexes and ANALYZE

def ensure_indexes(session, table, indexes, lock_timeout_ms, retries):
    """Build every entry of ``indexes`` (IndexSpec) on ``table`` that is not complete yet.
    Returns ``(facts, done)``: one dict per index (name, definition, status), and the steps."""
    existing = dict((ix.name, ix) for ix in describe_table(session, *table).indexes)
    facts, done = [], []
    for index in indexes:
        wanted = probe(session, table, index, lock_timeout_ms)
        have = existing.get(index.name)
        if have is None and index_is_valid(session, table[0], index.name) is not None:
            raise PartitioningError("%s: an index named %s exists on another table of schema %s; give the entry of "
                                    "indexes another name." % (qualified(*table), index.name, table[0]))
        if have is not None and _shape(have) != _shape(wanted):
            raise PartitioningError(
                "%s: index %s exists with another definition: %s; the spec asks for %s. Give the entry another name, "
                "or drop the index (DROP INDEX %s: it briefly locks the whole table) and run again."
                % (qualified(*table), index.name, _definition(have), _definition(wanted),
                   qualified(table[0], index.name)))
        steps = [] if have is not None and have.is_valid else build_online(
            session, table, index.name, wanted, lock_timeout_ms=lock_timeout_ms, retries=retries)
        if steps and not session.check_mode and index_is_valid(session, table[0], index.name) is not True:
            raise PartitioningError("%s: index %s is still invalid after its build: a partition's index could not be "
                                    "attached; run again." % (qualified(*table), index.name))
        facts.append(dict(name=index.name, definition=_definition(wanted),
                          status=("would be built" if session.check_mode else "built") if steps else "exists"))
        done.extend(steps)
    return facts, done


_NEVER_ANALYZED_SQL = """
SELECT n.nspname AS schema, c.relname AS name
  FROM pg_catalog.pg_partition_tree(%(parent)s::regclass) t
  JOIN pg_catalog.pg_class c ON c.oid = t.relid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_catalog.pg_stat_user_tables s ON s.relid = c.oid
 WHERE t.isleaf AND coalesce(s.n_live_tup, 0) > 0 AND s.last_analyze IS NULL AND s.last_autoanalyze IS NULL
 ORDER BY c.relname
"""


def ensure_analyzed(session, table, indexes_built):
    """ANALYZE what lacks statistics (see the module docstring); returns the steps."""
    parent = sql.Identifier(*table).as_string(session.conn)
    own = session.scalar("SELECT EXISTS (SELECT FROM pg_catalog.pg_statistic WHERE starelid = %s::regclass "
                         "AND stainherit)", (parent,))
    has_rows = session.scalar(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(sql.Identifier(*table)))
    if indexes_built or (has_rows and not own):
        relations = [table]
    else:
        relations = [(r["schema"], r["name"]) for r in session.query(_NEVER_ANALYZED_SQL, dict(parent=parent))]
    for relation in relations:
        run_without_timeouts(session, sql.SQL("ANALYZE {}").format(sql.Identifier(*relation)))
    return ["analyzed " + qualified(*r) for r in relations]


def optimize(session, spec, state_schema):
    """Phase 4 of ``spec`` (a TableSpec) on its partitioned table; the module's result."""
    table = partitioned_relation(session, spec, state_schema)
    lock_timeout_ms, retries = spec.tuning["lock_timeout_ms"], spec.tuning["swap_retries"]
    state_store.lock_table_work(session, spec.table_name)
    try:
        facts, done = ensure_indexes(session, table, spec.indexes, lock_timeout_ms, retries)
        analyzed = ensure_analyzed(session, table, any(f["status"] != "exists" for f in facts))
    finally:
        state_store.unlock_table_work(session, spec.table_name)
    built = [f["name"] for f in facts if f["status"] != "exists"]
    changed = bool(done or analyzed)
    if changed and not session.check_mode and state_store.get_table(session, state_schema, spec.table_name):
        state_store.record_run(session, state_schema, spec.table_name, "optimize",
                               details=dict(indexes=built, analyzed=analyzed))
    msg = "%s: %s; %s" % (spec.table_name,
                          "indexes %s %s" % (", ".join(built), "would be built" if session.check_mode else "built")
                          if built else "%d indexes in place" % len(facts),
                          "; ".join(analyzed) if analyzed else "statistics in place")
    return dict(changed=changed, table=spec.table_name, partitioned_table=qualified(*table), indexes=facts,
                done=done + analyzed, msg=msg)
