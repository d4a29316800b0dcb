# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Preflight: everything that would make phase 1 fail or a later phase unsafe, checked
before anything changes.

``preflight(session, spec, info, state_row, state_schema)`` only reads (catalog queries,
and one ``EXISTS`` over the partition key when the column is nullable). It collects every
problem and raises them together as one ``PartitioningError`` (a bullet per problem, the
list also in ``details['problems']``); what is merely worth knowing comes back as a list
of warnings.

Decisions:

* **Nullable partition key: refused, also when it holds no NULL today.** The key becomes
  part of the twin's primary key, so the twin's column is ``NOT NULL``; if the original
  still accepted NULL, an application INSERT of a NULL key would make the sync trigger —
  and so the application's own write — fail (HP4). The message says whether NULLs exist
  and how to add the constraint without a long lock (a ``CHECK (k IS NOT NULL) NOT VALID``,
  ``VALIDATE CONSTRAINT``, then ``SET NOT NULL``, which then skips the table scan).
* **Unique constraints and indexes without the partition key** are extended with it on the
  twin (HP6): reported as a warning, because the column alone is no longer unique. The
  warnings are ``twin.plan_warnings`` (what the twin cannot carry over exactly), so a caller
  of preflight need not add them again. Exclusion
  constraints that a partitioned table cannot have (before PostgreSQL 17, or without the
  partition key) are refused rather than silently lost.
* **Inbound foreign keys** (HP11), including a table's references to itself, are named;
  refused unless ``inbound_foreign_keys: drop`` (then a warning lists what phase 1 drops).
* **The twin**: absent, or recorded in the state schema in a phase this run can continue
  (prepared, copying, copied, verified). After switchover (switched, cleaned) the table is
  already partitioned: nothing is checked and a warning says so. A twin or a
  ``<table>_old`` that exists without a state row is somebody else's table: refused. A state
  row whose partition key, strategy or bounds differ from the spec is refused (start over
  with rollback.yml).
* **What would fail later** is refused now, each with the statement that fixes it: the table's
  publications (``publications.review``: a row filter or column list the partitioned table
  cannot keep, a column list without its replica identity, subscribers that would stop; HP12,
  HP19), every privilege the later phases will use (``privileges``: a table owner without
  superuser), and guards that could not see other roles' sessions or the replicas' lag
  (``health.blind_guards``, HP21; ``allow_blind_guards`` turns that into a warning).
* **Updates of the partition key** meet PostgreSQL's 40001 rule after the switchover: said once
  when the table has been updated at all (``_key_update_warning``).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.dbops.partitioning.plugins.module_utils import privileges, publications
from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.bounds import is_width, partition_name, range_key_kind
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_relation, schema_relations
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.health import blind_guards
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import did_you_mean, display, qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.twin import (
    plan_warnings, replica_identity_columns)

try:
    import psycopg2
    import psycopg2.extensions
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    psycopg2 = sql = None

MIN_SERVER_VERSION = 140000
CONTINUE_PHASES = ("prepared", "copying", "copied", "verified")
DONE_PHASES = state_store.SWITCHED_PHASES
# Spec fields that fix the twin's shape: a change needs a new twin.
SHAPE_FIELDS = ("partition_key", "strategy", "interval", "partitions", "values")

_RELKINDS = {"v": "a view", "m": "a materialized view", "f": "a foreign table", "p": "a partitioned table",
             "S": "a sequence", "c": "a composite type", "i": "an index", "I": "a partitioned index",
             "t": "a TOAST table", "r": "a table"}

# A default operator class of the access method for the type (directly, through a
# binary-compatible cast such as varchar -> text, through a domain's base type, or through
# the polymorphic classes of arrays, enums and ranges): what PARTITION BY needs.
_OPCLASS_SQL = """
WITH t AS (
  SELECT CASE WHEN typtype = 'd' THEN typbasetype ELSE oid END AS oid
    FROM pg_catalog.pg_type WHERE oid = %(type_oid)s
), b AS (
  SELECT ty.oid, ty.typtype, ty.typcategory FROM pg_catalog.pg_type ty JOIN t ON ty.oid = t.oid
)
SELECT EXISTS (
  SELECT 1 FROM pg_catalog.pg_opclass oc JOIN pg_catalog.pg_am am ON am.oid = oc.opcmethod, b
   WHERE am.amname = %(method)s AND oc.opcdefault
     AND (oc.opcintype = b.oid
          OR EXISTS (SELECT 1 FROM pg_catalog.pg_cast ca WHERE ca.castsource = b.oid
                      AND ca.casttarget = oc.opcintype AND ca.castmethod = 'b')
          OR (oc.opcintype = 'pg_catalog.anyarray'::regtype AND b.typcategory = 'A')
          OR (oc.opcintype = 'pg_catalog.anyenum'::regtype AND b.typtype = 'e')
          OR (oc.opcintype = 'pg_catalog.anyrange'::regtype AND b.typtype = 'r'))
)
"""

# What the connecting role may do: own the table (be a member of its owner), create in its schema.
_PRIVILEGES_SQL = """
SELECT pg_catalog.pg_has_role(current_user, %(owner)s, 'USAGE') AS owner,
       pg_catalog.has_schema_privilege(%(schema)s, 'CREATE') AS can_create
"""


def _fk_text(fk):
    return "%s on %s (%s)" % (fk.name, qualified(*fk.table), ", ".join(fk.columns))


def _spec_shape(spec_json):
    spec_json = spec_json or {}
    shape = {}
    for f in SHAPE_FIELDS:
        value = spec_json.get(f)
        if f == "values" and value:
            value = dict((k, [str(v) for v in vs]) for k, vs in value.items())
        shape[f] = value if value not in ({}, []) else None
    shape["strategy"] = shape["strategy"] or "range"
    return shape


def preflight(session, spec, info, state_row, state_schema, runbook_schema=None):
    """Check ``spec`` against the database; returns warnings, raises every problem at once.

    ``info`` is ``catalog.describe_table(...)`` of the original (None when there is no such
    table); ``state_row`` is ``state.get_table(...)`` (None when unmanaged).
    """
    problems, warnings = [], []
    label = spec.table_name

    version = int(session.scalar("SELECT current_setting('server_version_num')::int"))
    if version < MIN_SERVER_VERSION:
        problems.append("PostgreSQL %s is not supported: dbops.partitioning needs 14 or newer."
                        % session.scalar("SELECT current_setting('server_version')"))

    phase = state_row.get("phase") if state_row else None
    if phase in DONE_PHASES:
        warnings.append("%s was switched over already (phase %s): it is the partitioned table now; "
                        "nothing for phase 1 to check." % (label, phase))
        return _finish(label, problems, warnings)

    _check_state(session, spec, state_row, phase, problems)
    _check_state_schema(session, state_schema, problems)
    _check_partition_names(session, spec, problems)

    if info is None or info.kind != "r":
        rel = describe_relation(session, spec.schema, spec.name)
        if rel is None:
            problems.append("%s does not exist (check the schema and the spelling; unqualified names mean "
                            "public)." % label)
        else:
            what = _RELKINDS.get(rel.kind, "not a plain table")
            extra = " (already partitioned: nothing to migrate)" if rel.kind == "p" else ""
            problems.append("%s is %s%s; only plain tables can be partitioned online." % (label, what, extra))
        return _finish(label, problems, warnings)

    if info.persistence == "u":
        problems.append("%s is UNLOGGED: its rows are not replicated nor crash-safe; make it LOGGED "
                        "(ALTER TABLE ... SET LOGGED) before partitioning it." % label)
    elif info.persistence == "t":
        problems.append("%s is a temporary table; only permanent tables can be partitioned." % label)

    if info.parents or info.children:
        problems.append("%s takes part in table inheritance (%d parent(s), %d child table(s)); a partitioned "
                        "table cannot: detach the inheritance first." % (label, info.parents, info.children))
    if info.typed:
        problems.append("%s is a typed table (CREATE TABLE ... OF type); a partitioned twin cannot be." % label)
    may = session.query(_PRIVILEGES_SQL, dict(owner=info.owner, schema=spec.schema))[0]
    if not may["owner"]:
        problems.append("%s: the role %s does not own the table (owner: %s): it needs to, to create the sync "
                        "triggers and to rename the table at switchover."
                        % (label, session.scalar("SELECT current_user"), info.owner))
    if not may["can_create"]:
        problems.append("%s: the role %s may not CREATE in schema %s (the twin goes there)."
                        % (label, session.scalar("SELECT current_user"), spec.schema))

    if info.primary_key is None:
        problems.append("%s has no primary key: the backfill walks it and the sync triggers find rows by it; "
                        "add one first." % label)

    _check_key(session, spec, info, problems)
    _check_unique(spec, info, problems, warnings, version)
    _check_inbound(spec, info, problems, warnings)

    # Known now, blocking only at switchover: say so before hours of backfill.
    if info.sql_functions:
        warnings.append("%s: functions with SQL-standard bodies (BEGIN ATOMIC) are bound to the table and would keep "
                        "using the old one after the swap: %s; the switchover refuses until they are rewritten in "
                        "PL/pgSQL or dropped (HP9)." % (label, ", ".join(info.sql_functions)))
    # What would fail later, or break replication, for want of a privilege or a publication's setting.
    late, notes = publications.review(session, label, info, replica_identity_columns(info, spec.partition_key),
                                      spec.twin, spec.old, state_schema, spec.tuning["subscribers_ready"])
    problems.extend(late)
    warnings.extend(notes)
    problems.extend(privileges.prepare_problems(session, spec, info, state_schema, runbook_schema))
    problems.extend(privileges.switchover_problems(session, label, info))
    blind = blind_guards(session)
    if blind and not spec.tuning["allow_blind_guards"]:
        problems.append("%s: %s" % (label, blind.refusal()))
    elif blind:
        warnings.append("%s: %s" % (label, blind.downgrade()))
    warnings.extend(_key_update_warning(session, spec, info))
    if not spec.default_partition and spec.strategy in ("range", "list"):
        warnings.append("%s: default_partition is false: during the migration a write whose %s falls outside "
                        "every partition fails, because the sync trigger cannot route it into the twin (HP4); "
                        "keep it true unless the keys can never fall outside." % (label, spec.partition_key))
    # What the twin cannot carry over exactly (extended unique keys, HP6; invalid indexes;
    # self-references...): twin.py's own list, so preflight and phase 1 say the same thing.
    warnings[:0] = plan_warnings(info, spec, version)
    return _finish(label, problems, warnings)


def _key_update_warning(session, spec, info):
    """Updates of the partition key will meet PostgreSQL's rule for partitioned tables: an UPDATE
    that moves a row to another partition makes a concurrent UPDATE, DELETE or locking read of
    that row fail with 40001, also in READ COMMITTED. The statistics cannot tell which columns
    the table's updates changed (and what a trigger allows cannot be read), so this is said once,
    whenever the table has been updated at all."""
    updates = session.scalar("SELECT n_tup_upd FROM pg_catalog.pg_stat_user_tables WHERE relid = %s", (info.oid,))
    if not updates:
        return []
    return ["%s: the table has had %d row updates (the statistics cannot tell which columns they changed). If the "
            "application updates %s: on the partitioned table such an UPDATE moves the row to another partition, and "
            "a concurrent UPDATE, DELETE or SELECT ... FOR UPDATE of the same row then fails with SQLSTATE 40001 "
            "(tuple to be locked was already moved to another partition due to concurrent update), also in READ "
            "COMMITTED: from the switchover on, such writes must be retried on 40001 (docs/runbooks/phase3.md)."
            % (spec.table_name, updates, spec.partition_key)]


def _check_state(session, spec, state_row, phase, problems):
    label = spec.table_name
    twin = describe_relation(session, *spec.twin)
    if state_row is None or phase == "rolled_back":
        if twin is not None and phase == "rolled_back":
            problems.append("%s: the last migration was rolled back but its twin %s still exists; drop it "
                            "(cleanup.yml) before preparing again." % (label, qualified(*spec.twin)))
        elif twin is not None:
            problems.append("%s already exists but no migration of %s is recorded in the state schema; it is not "
                            "ours to reuse: drop or rename it." % (qualified(*spec.twin), label))
        old = describe_relation(session, *spec.old)
        if old is not None:
            problems.append("%s already exists; the switchover needs that name for the original table: drop or "
                            "rename it." % qualified(*spec.old))
        return
    if phase not in CONTINUE_PHASES:
        problems.append("%s: the state schema records an unknown phase %r." % (label, phase))
        return
    if twin is None and phase != "prepared":
        problems.append("%s: the state schema says phase %s but the twin %s is missing; run rollback.yml to start "
                        "over." % (label, phase, qualified(*spec.twin)))
    elif twin is not None and twin.kind != "p":
        problems.append("%s exists but is not a partitioned table; it is not the twin this tool created."
                        % qualified(*spec.twin))
    recorded, wanted = _spec_shape(state_row.get("spec")), _spec_shape(spec.to_json())
    changed = [f for f in SHAPE_FIELDS if recorded[f] != wanted[f]]
    if changed:
        problems.append("%s: the spec changed since phase 1 (%s); the twin was built for %s. Run rollback.yml to "
                        "start over, or restore the spec."
                        % (label, ", ".join("%s %r -> %r" % (f, recorded[f], wanted[f]) for f in changed),
                           ", ".join("%s=%r" % (f, recorded[f]) for f in changed)))


_STATE_SCHEMA_SQL = """
SELECT n.oid IS NOT NULL AS present,
       (SELECT count(*) FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid) AS relations,
       to_regclass(pg_catalog.quote_ident(%(schema)s) || '.schema_version') IS NOT NULL AS ours,
       pg_catalog.has_database_privilege(current_database(), 'CREATE') AS can_create
  FROM (SELECT 1) one LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = %(schema)s
"""


def _check_state_schema(session, state_schema, problems):
    """The state schema is ours, or empty, or absent and creatable."""
    row = session.query(_STATE_SCHEMA_SQL, dict(schema=state_schema))[0]
    if row["present"] and not row["ours"] and row["relations"]:
        problems.append("schema %s exists and holds other objects but no dbops.partitioning state (no "
                        "schema_version table); choose another partitioning_state_schema or drop it."
                        % display(state_schema))
    elif not row["present"] and not row["can_create"]:
        problems.append("the state schema %s is missing and the role %s may not create schemas in this database "
                        "(GRANT CREATE ON DATABASE)." % (display(state_schema),
                                                         session.scalar("SELECT current_user")))


_SUFFIXES = {"daily": r"\d{4}_\d{2}_\d{2}", "weekly": r"\d{4}_w\d{2}", "monthly": r"\d{4}_\d{2}",
             "quarterly": r"\d{4}_q[1-4]", "yearly": r"\d{4}"}


def _suffix_pattern(spec):
    if spec.strategy == "hash":
        shapes = [r"p\d{2,}"]
    elif spec.strategy == "list":
        shapes = [re.escape(name) for name in spec.values]
    elif is_width(spec.interval):
        shapes = [r"m?\d+"]
    else:
        shapes = [_SUFFIXES[spec.interval]]
    return re.compile(r"_(%s|default)$" % "|".join(shapes))


def _check_partition_names(session, spec, problems):
    """A relation (table, index, view, sequence...) already named like one of the twin's
    partitions, and not a partition of the twin, would stop phase 1 half-way."""
    pattern = _suffix_pattern(spec)
    twin_name = spec.twin[1]
    for name, kind, parent in schema_relations(session, spec.schema):
        m = pattern.search(name)
        if not m or partition_name(spec.name, m.group(1)) != name or parent == twin_name:
            continue
        problems.append("%s already exists (%s) and is not a partition of %s; phase 1 needs that name for a "
                        "partition: rename or drop it." % (qualified(spec.schema, name),
                                                           _RELKINDS.get(kind, "a relation"), qualified(*spec.twin)))


def _check_key(session, spec, info, problems):
    label, key = spec.table_name, spec.partition_key
    col = info.column(key)
    if col is None:
        problems.append("%s has no column %s%s." % (label, key, did_you_mean(key, [c.name for c in info.columns])))
        return
    if col.generated:
        problems.append("%s: %s is a generated column; PostgreSQL cannot partition by one." % (label, key))
    if spec.strategy == "range":
        if range_key_kind(col.type, spec.interval) is None:
            if is_width(spec.interval):
                problems.append("%s: %s is %s; a numeric interval (%d) needs a smallint, integer or bigint key."
                                % (label, key, col.type, spec.interval))
            else:
                problems.append("%s: %s is %s; range partitioning by a calendar interval supports date, "
                                "timestamp and timestamptz keys (a numeric interval suits integer keys; use "
                                "strategy hash or list for other types)." % (label, key, col.type))
    else:
        method = "hash" if spec.strategy == "hash" else "btree"
        if not session.scalar(_OPCLASS_SQL, dict(type_oid=col.type_oid, method=method)):
            problems.append("%s: %s is %s, which has no default %s operator class: %s partitioning needs one."
                            % (label, key, col.type, method, spec.strategy))
        elif spec.strategy == "list":
            if _check_list_values(session, spec, col, problems) and not spec.default_partition:
                _check_list_coverage(session, spec, problems)
    if not col.not_null:
        has_nulls = session.scalar(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {} IS NULL)").format(
            sql.Identifier(spec.schema, spec.name), sql.Identifier(key)))
        now = ("it holds NULLs now: give them a value, then" if has_nulls
               else "it holds no NULL now, so")
        problems.append("%s: the partition key %s must be NOT NULL (it becomes part of the primary key, and a "
                        "NULL written later would make the sync trigger fail the application's write); %s "
                        "add the constraint without a long lock: ADD CONSTRAINT ... CHECK (%s IS NOT NULL) "
                        "NOT VALID; VALIDATE CONSTRAINT ...; ALTER COLUMN %s SET NOT NULL."
                        % (label, key, now, key, key))


def _check_list_values(session, spec, col, problems):
    """Every list value must be a valid value of the key's type (else CREATE TABLE ... PARTITION OF
    fails half-way through phase 1). The value is compared, as an untyped literal, with the column
    in a query that reads no row: PostgreSQL parses it with the column's type, or says why not."""
    stmt = sql.SQL("SELECT 1 FROM (SELECT {} AS k FROM {} LIMIT 0) s WHERE s.k = %s").format(
        sql.Identifier(spec.partition_key), sql.Identifier(spec.schema, spec.name))
    ok = True
    for name, values in spec.values.items():
        for value in values:
            error = _try_query(session, stmt, (str(value),))
            if error:
                ok = False
                problems.append("%s: values.%s: %r is not a valid %s (%s)."
                                % (spec.table_name, name, value, col.type, error))
    return ok


def _check_list_coverage(session, spec, problems):
    """Without a default partition every key already in the table must be in some list."""
    values = [v for vs in spec.values.values() for v in vs]
    rows = session.query(sql.SQL("SELECT DISTINCT {key}::text AS v FROM {tbl} WHERE {key} NOT IN ({vals}) "
                                 "ORDER BY 1 LIMIT 6").format(
        key=sql.Identifier(spec.partition_key), tbl=sql.Identifier(spec.schema, spec.name),
        vals=sql.SQL(", ").join(sql.Literal(str(v)) for v in values)))
    if rows:
        shown = ", ".join(repr(r["v"]) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        problems.append("%s: rows with %s %s are in no list partition and there is no default partition: add "
                        "them to values or set default_partition: true." % (spec.table_name, spec.partition_key,
                                                                            shown))


def _try_query(session, stmt, params):
    """Run a read-only query; return PostgreSQL's message instead of raising (inside a
    transaction a savepoint keeps the caller's transaction usable)."""
    conn = session.conn
    in_tx = conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE
    if in_tx:
        session.query("SAVEPOINT dbops_preflight")
    try:
        session.query(stmt, params)
    except psycopg2.Error as e:
        if in_tx:
            session.query("ROLLBACK TO SAVEPOINT dbops_preflight")
        return (e.diag.message_primary or str(e)).strip()
    if in_tx:
        session.query("RELEASE SAVEPOINT dbops_preflight")
    return None


def _check_unique(spec, info, problems, warnings, version):
    """Refuse what would be lost; the extensions of unique keys are twin.plan_warnings'."""
    label, key = spec.table_name, spec.partition_key
    for con in info.constraints:
        # PostgreSQL 17 allows exclusion constraints on a partitioned table when the partition
        # key is compared with '=' in them; otherwise the constraint would be silently lost.
        if con.type == "x" and not (version >= 170000 and key in con.columns):
            problems.append("%s: exclusion constraint %s (%s) cannot exist on a partitioned table%s; drop it (and "
                            "enforce the rule otherwise) or add the partition key with '=' to it."
                            % (label, con.name, con.definition,
                               " before PostgreSQL 17" if version < 170000 else " without the partition key"))


def _check_inbound(spec, info, problems, warnings):
    label = spec.table_name
    inbound = list(info.referenced_by)
    if not inbound:
        return
    names = "; ".join(_fk_text(fk) for fk in inbound)
    if spec.inbound_foreign_keys == "refuse":
        problems.append("%s is referenced by foreign keys that cannot follow it to a partitioned table: %s. "
                        "Set inbound_foreign_keys: drop to have phase 1 drop them (and report them), or drop "
                        "them yourself." % (label, names))
    else:
        warnings.append("%s: phase 1 will drop the foreign keys that reference it (inbound_foreign_keys: drop): "
                        "%s." % (label, names))


def _finish(label, problems, warnings):
    if problems:
        if len(problems) == 1:
            raise PartitioningError("Preflight failed for %s: %s" % (label, problems[0]), problems=problems,
                                    warnings=warnings)
        raise PartitioningError("Preflight failed for %s (%d problems):\n- %s"
                                % (label, len(problems), "\n- ".join(problems)), problems=problems,
                                warnings=warnings)
    return warnings
