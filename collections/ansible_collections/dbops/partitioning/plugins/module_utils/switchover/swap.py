# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The short-lock swap of two tables (phase 3 switchover, and rollback after it).

One function, ``swap_tables``, serves both directions. The *active* table holds the
application's name and its views, triggers, publications and sequences; the *standby* table
holds the same rows (the sync trigger keeps it equal in every transaction). The swap, in one
transaction under ``SET LOCAL lock_timeout`` (HP8), retried with backoff and jitter:

1. LOCK the dependent views (outermost first), the active and the standby ACCESS EXCLUSIVE:
   the same order a reader takes (view, then table), so a reader can never deadlock with us.
2. Reconcile the keys pending in the state schema (active -> standby): under the lock nobody
   writes, so "delete the standby's rows of the key, copy the active's" is exact.
3. Drop the sync triggers on the active (nothing must mirror from it any more).
4. Drop the dependent views (they are bound to the active's OID, HP9) and the materialized
   views that were pre-built beside the old ones before the lock.
5. Rename the active's indexes and index-backed constraints to derived names, the standby's to
   the names the application knows (``revenues_pkey`` ...), then the tables themselves.
6. Owner, grants, comment, RLS flags copied onto the standby (RLS off on the active so the
   reverse sync sees every row), serial sequences ``OWNED BY`` the standby, identity columns
   as the active had them (ALWAYS restored) and restarted above the old maximum (HP10).
7. The application's own triggers created on (or re-enabled on) the standby, disabled on the
   active: the reverse sync writes the active and must not fire them a second time.
8. Views re-created from the definitions captured before the lock, with owner, grants,
   comment and options (security_barrier, check_option, security_invoker); pre-built
   materialized views renamed into place (HP9).
9. Publication membership moved (HP12).
10. The caller's ``finish`` statements run (forward: install the reverse sync and record phase
    'switched' with the lock time); COMMIT. ANALYZE follows outside the lock.

The whole transaction is sent in one round trip (then COMMIT): on a busy machine every client
round trip under the lock would add a wait for a CPU to the lock time.

Every catalog fact the transaction needs is captured *before* it begins: the statements
inside are pure DDL and the lock is held for milliseconds (see docs/runbooks/phase3.md for how
the time is measured).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import time

from ansible_collections.dbops.partitioning.plugins.module_utils.compare import compare_for_swap
from ansible_collections.dbops.partitioning.plugins.module_utils import sync
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.health import replica_lag_s
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import derived_name, qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.keys import key_json
from ansible_collections.dbops.partitioning.plugins.module_utils.locking import (
    backoff_ms, blocking_sessions, describe_blockers, long_transactions)

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    psycopg2 = None
    sql = None

LOCK_NOT_AVAILABLE = "55P03"
DEADLOCK = "40P01"
PREBUILT_SUFFIX = "_swap"

# --------------------------------------------------------------------------------------------
# Catalog capture (read-only; runs before the swap transaction)
# --------------------------------------------------------------------------------------------

REL_SQL = """
SELECT c.oid, c.relkind, pg_get_userbyid(c.relowner) AS owner, c.relrowsecurity AS rls,
       c.relforcerowsecurity AS rls_forced, obj_description(c.oid, 'pg_class') AS comment
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s
"""

ACL_SQL = """
SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END AS grantee,
       a.privilege_type AS privilege, a.is_grantable AS grantable
FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
WHERE c.oid = %s AND a.grantee <> c.relowner
ORDER BY 1 NULLS FIRST, 2
"""

COLUMNS_SQL = """
SELECT a.attname AS name, a.attidentity AS identity, a.attgenerated AS generated
FROM pg_attribute a WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""

PK_SQL = """
SELECT a.attname AS name FROM pg_constraint c
CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
WHERE c.conrelid = %s AND c.contype = 'p' ORDER BY k.ord
"""

# The relation's own indexes (not those of its partitions), with the constraint they back.
INDEXES_SQL = """
SELECT ic.relname AS name, i.indisprimary AS is_primary, con.conname AS constraint_name
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                            AND con.contype IN ('p', 'u', 'x')
WHERE i.indrelid = %s ORDER BY ic.relname
"""

# The application's triggers: not internal (FK), not clones on partitions, not ours.
TRIGGERS_SQL = """
SELECT t.tgname AS name, pg_get_triggerdef(t.oid) AS definition, t.tgenabled AS enabled
FROM pg_trigger t
WHERE t.tgrelid = %s AND NOT t.tgisinternal {parent} AND t.tgname <> ALL (%s)
ORDER BY t.tgname
"""

# Views and materialized views depending on the table, directly or through other views.
VIEWS_SQL = """
WITH RECURSIVE deps(oid, depth) AS (
    SELECT DISTINCT r.ev_class, 1
    FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.refobjid = %s AND r.ev_class <> d.refobjid
  UNION ALL
    SELECT DISTINCT r.ev_class, deps.depth + 1
    FROM deps JOIN pg_depend d ON d.refobjid = deps.oid AND d.refclassid = 'pg_class'::regclass
                               AND d.classid = 'pg_rewrite'::regclass
    JOIN pg_rewrite r ON r.oid = d.objid
    WHERE r.ev_class <> deps.oid AND deps.depth < 50
)
SELECT c.oid, n.nspname AS schema, c.relname AS name, c.relkind AS kind, max(deps.depth) AS depth,
       pg_get_viewdef(c.oid) AS definition, pg_get_userbyid(c.relowner) AS owner,
       obj_description(c.oid, 'pg_class') AS comment, coalesce(c.reloptions, '{}') AS reloptions,
       (SELECT spcname FROM pg_tablespace WHERE oid = c.reltablespace) AS tablespace,
       EXISTS (SELECT 1 FROM pg_rewrite r2 JOIN pg_depend d2 ON d2.objid = r2.oid
                                                  AND d2.classid = 'pg_rewrite'::regclass
               WHERE r2.ev_class = c.oid AND d2.refobjid = %s) AS direct
FROM deps JOIN pg_class c ON c.oid = deps.oid JOIN pg_namespace n ON n.oid = c.relnamespace
GROUP BY c.oid, n.nspname, c.relname, c.relkind
ORDER BY max(deps.depth), c.relname
"""

MATVIEW_INDEXES_SQL = """
SELECT ic.relname AS name, pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = %s ORDER BY ic.relname
"""

VIEW_COLUMN_COMMENTS_SQL = """
SELECT a.attname AS column, d.description AS comment
FROM pg_description d JOIN pg_attribute a ON a.attrelid = d.objoid AND a.attnum = d.objsubid
WHERE d.objoid = %s AND d.classoid = 'pg_class'::regclass AND d.objsubid > 0 ORDER BY a.attnum
"""

# INSTEAD OF triggers of updatable views go with the view: re-created after it
VIEW_TRIGGERS_SQL = """
SELECT t.tgname AS name, pg_get_triggerdef(t.oid) AS definition, t.tgenabled AS enabled
FROM pg_trigger t WHERE t.tgrelid = %s AND NOT t.tgisinternal ORDER BY t.tgname
"""

# Objects other than views bound to the table or its views by OID: SQL-standard function bodies
# (BEGIN ATOMIC, HP9) and inbound foreign keys (HP11) cannot follow a rename.
BOUND_FUNCTIONS_SQL = """
SELECT DISTINCT p.oid::regprocedure::text AS name
FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = ANY (%s)
"""

INBOUND_FK_SQL = """
SELECT conname AS name, conrelid::regclass::text AS referencing
FROM pg_constraint WHERE contype = 'f' AND confrelid = %s AND conrelid <> confrelid
"""

# Serial sequences (OWNED BY, deptype 'a') and identity sequences (deptype 'i') of the table.
SEQUENCES_SQL = """
SELECT n.nspname AS schema, s.relname AS name, a.attname AS column, d.deptype = 'i' AS identity
FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
JOIN pg_namespace n ON n.oid = s.relnamespace
JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = %s
  AND d.deptype IN ('a', 'i')
ORDER BY a.attname
"""

PUBLICATIONS_SQL = """
SELECT p.pubname AS name, p.pubviaroot AS via_root, {extra}
FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid WHERE r.prrelid = %s ORDER BY 1
"""
# PostgreSQL 15+: a row filter and a column list per table, carried with the membership
PUBLICATIONS_EXTRA_15 = ("pg_get_expr(r.prqual, r.prrelid) AS qual, (SELECT array_agg(a.attname ORDER BY a.attnum) "
                         "FROM pg_attribute a WHERE a.attrelid = r.prrelid AND a.attnum = ANY (r.prattrs)) AS columns")
PUBLICATIONS_EXTRA_14 = "NULL::text AS qual, NULL::name[] AS columns"

FKS_SQL = "SELECT conname AS name FROM pg_constraint WHERE conrelid = %s AND contype = 'f' AND conparentid = 0 ORDER BY 1"

POLICIES_SQL = "SELECT polname AS name FROM pg_policy WHERE polrelid = %s ORDER BY 1"


def relation(session, schema, name):
    rows = session.query(REL_SQL, (schema, name))
    return rows[0] if rows else None


def _qname(session, schema, name):
    """The name as PostgreSQL's deparsers print it (quote_ident, schema-qualified)."""
    return session.scalar("SELECT quote_ident(%s) || '.' || quote_ident(%s)", (schema, name))


def capture(session, schema, active, standby):
    """Everything the swap of ``active`` and ``standby`` (names in ``schema``) needs, as JSON-able dicts.

    Definitions are printed with ``search_path = pg_catalog`` so that every name in them is
    schema-qualified and resolves the same way inside the swap transaction.
    """
    a = relation(session, schema, active)
    s = relation(session, schema, standby)
    if a is None:
        raise PartitioningError("Table %s does not exist." % qualified(schema, active))
    if s is None:
        raise PartitioningError("Table %s does not exist: nothing to switch to." % qualified(schema, standby))
    old_path = session.scalar("SELECT current_setting('search_path')")
    session.query("SELECT set_config('search_path', 'pg_catalog, pg_temp', false)")
    try:
        parent = "AND t.tgparentid = 0" if session.server_version >= 130000 else ""
        trig_sql = TRIGGERS_SQL.format(parent=parent)
        views = []
        for v in session.query(VIEWS_SQL, (a["oid"], a["oid"])):
            v = dict(v)
            v["acl"] = [dict(r) for r in session.query(ACL_SQL, (v["oid"],))]
            v["indexes"] = [dict(r) for r in session.query(MATVIEW_INDEXES_SQL, (v["oid"],))] \
                if v["kind"] == "m" else []
            v["reloptions"] = list(v["reloptions"])
            v["column_comments"] = [dict(r) for r in session.query(VIEW_COLUMN_COMMENTS_SQL, (v["oid"],))]
            v["triggers"] = [dict(r) for r in session.query(VIEW_TRIGGERS_SQL, (v["oid"],))]
            views.append(v)
        cap = dict(
            schema=schema, active=active, standby=standby,
            active_qname=_qname(session, schema, active), standby_qname=_qname(session, schema, standby),
            active_oid=a["oid"], standby_oid=s["oid"],
            owner=a["owner"], comment=a["comment"], rls=a["rls"], rls_forced=a["rls_forced"],
            acl=[dict(r) for r in session.query(ACL_SQL, (a["oid"],))],
            standby_owner=s["owner"], standby_comment=s["comment"],
            standby_acl=[dict(r) for r in session.query(ACL_SQL, (s["oid"],))],
            columns=[dict(r) for r in session.query(COLUMNS_SQL, (a["oid"],))],
            standby_columns=[dict(r) for r in session.query(COLUMNS_SQL, (s["oid"],))],
            pk=[r["name"] for r in session.query(PK_SQL, (a["oid"],))],
            standby_pk=[r["name"] for r in session.query(PK_SQL, (s["oid"],))],
            indexes=[dict(r) for r in session.query(INDEXES_SQL, (a["oid"],))],
            standby_indexes=[dict(r) for r in session.query(INDEXES_SQL, (s["oid"],))],
            triggers=[dict(r) for r in session.query(trig_sql, (a["oid"], list(sync.TRIGGER_NAMES)))],
            standby_triggers=[dict(r) for r in session.query(trig_sql, (s["oid"], list(sync.TRIGGER_NAMES)))],
            sync_triggers=sync.sync_triggers(session, (schema, active)),
            views=views,
            bound_functions=[r["name"] for r in session.query(
                BOUND_FUNCTIONS_SQL, ([a["oid"]] + [v["oid"] for v in views],))],
            inbound_fks=[dict(r) for r in session.query(INBOUND_FK_SQL, (a["oid"],))],
            sequences=[dict(r) for r in session.query(SEQUENCES_SQL, (a["oid"],))],
            standby_sequences=[dict(r) for r in session.query(SEQUENCES_SQL, (s["oid"],))],
            publications=[dict(r, columns=list(r["columns"]) if r["columns"] else None) for r in session.query(
                PUBLICATIONS_SQL.format(extra=PUBLICATIONS_EXTRA_15 if session.server_version >= 150000
                                        else PUBLICATIONS_EXTRA_14), (a["oid"],))],
            fks=[r["name"] for r in session.query(FKS_SQL, (a["oid"],))],
            standby_fks=[r["name"] for r in session.query(FKS_SQL, (s["oid"],))],
            policies=[r["name"] for r in session.query(POLICIES_SQL, (a["oid"],))],
            standby_policies=[r["name"] for r in session.query(POLICIES_SQL, (s["oid"],))],
        )
    finally:
        session.query("SELECT set_config('search_path', %s, false)", (old_path,))
    return cap


def refusals(cap):
    """Problems that make the swap impossible; each names the object and what to do."""
    out = []
    if cap["bound_functions"]:
        out.append("functions with SQL-standard bodies (BEGIN ATOMIC) are bound to %s or its views and would keep "
                   "using the old table: %s; rewrite them in PL/pgSQL or drop them first"
                   % (cap["active"], ", ".join(cap["bound_functions"])))
    if cap["inbound_fks"]:
        out.append("foreign keys reference %s and cannot follow the swap (HP11): %s; drop them or set "
                   "inbound_foreign_keys: drop in phase 1"
                   % (cap["active"], ", ".join("%s on %s" % (f["name"], f["referencing"]) for f in cap["inbound_fks"])))
    if not cap["standby_pk"]:
        out.append("%s has no primary key" % cap["standby"])
    missing = [c["name"] for c in cap["columns"] if c["name"] not in set(x["name"] for x in cap["standby_columns"])]
    if missing:
        out.append("%s lacks columns of %s: %s" % (cap["standby"], cap["active"], ", ".join(missing)))
    return out


# --------------------------------------------------------------------------------------------
# Materialized views: pre-built beside the old ones, before the lock
# --------------------------------------------------------------------------------------------

_NOT_ALIAS = set("""WHERE GROUP ORDER JOIN LEFT RIGHT INNER FULL CROSS ON UNION LIMIT HAVING WINDOW EXCEPT
INTERSECT OFFSET FETCH FOR USING NATURAL LATERAL TABLESAMPLE AS""".split())


def retarget_definition(definition, old_qname, new_qname, alias):
    """Point a deparsed query at another table of the same shape.

    ``FROM public.revenues`` -> ``FROM public.revenues_partitioned revenues`` (the alias keeps the
    column references ``revenues.amount`` valid); an existing alias (``public.revenues r``) is kept.
    """
    pat = re.compile(re.escape(old_qname) + r'(?![\w$"])')
    out, pos = [], 0
    for m in pat.finditer(definition):
        out.append(definition[pos:m.start()])
        rest = definition[m.end():]
        nxt = re.match(r'\s+("(?:[^"]|"")+"|[A-Za-z_][\w$]*)', rest)
        has_alias = bool(nxt) and (nxt.group(1).startswith('"') or nxt.group(1).upper() not in _NOT_ALIAS)
        out.append(new_qname if has_alias else "%s %s" % (new_qname, alias))
        pos = m.end()
    out.append(definition[pos:])
    return "".join(out)


def _create_view_sql(v, definition, name=None, with_data=True):
    name = name or v["name"]
    opts = list(v["reloptions"])
    parts = [sql.SQL("CREATE MATERIALIZED VIEW " if v["kind"] == "m" else "CREATE VIEW "),
             sql.Identifier(v["schema"], name)]
    if opts:
        parts.append(sql.SQL(" WITH ({})").format(sql.SQL(", ").join(_reloption(o) for o in opts)))
    if v["kind"] == "m" and v.get("tablespace"):
        parts.append(sql.SQL(" TABLESPACE {}").format(sql.Identifier(v["tablespace"])))
    body = definition.rstrip().rstrip(";")
    parts.append(sql.SQL(" AS ") + sql.SQL(body))  # pg_get_viewdef output: PostgreSQL's own deparse
    if v["kind"] == "m":
        parts.append(sql.SQL(" WITH DATA" if with_data else " WITH NO DATA"))
    return sql.Composed(parts)


def _reloption(opt):
    key, _unused, value = opt.partition("=")
    return sql.SQL("{} = {}").format(sql.Identifier(key), sql.Literal(value))


def _index_sql(session, definition, schema, old_index, old_rel, new_index, new_rel):
    """A matview index definition (pg_get_indexdef) renamed onto another relation."""
    def q(name):
        return session.scalar("SELECT quote_ident(%s)", (name,))

    head = re.match(r"^(CREATE (?:UNIQUE )?INDEX )(\S+|\"(?:[^\"]|\"\")+\") ON (?:ONLY )?(\S+) ", definition)
    if not head or head.group(2) != q(old_index) or head.group(3) != "%s.%s" % (q(schema), q(old_rel)):
        return None
    return sql.SQL(head.group(1)) + sql.Identifier(new_index) + sql.SQL(" ON ") + \
        sql.Identifier(schema, new_rel) + sql.SQL(" " + definition[head.end():])


def prebuild_matviews(session, cap, reuse=False):
    """Build every materialized view that reads the active table directly beside the old one,
    on the standby, with its indexes. Returns {matview name: prebuilt name} of those ready;
    the others are built inside the swap (their query runs under the lock: reported).

    Runs before the lock; an earlier interrupted run's pre-built view is replaced.
    """
    ready = {}
    schema = cap["schema"]
    for v in cap["views"]:
        if v["kind"] != "m" or not v["direct"] or v["depth"] != 1:
            continue
        name = derived_name(v["name"], PREBUILT_SUFFIX)
        definition = retarget_definition(v["definition"], cap["active_qname"], cap["standby_qname"],
                                         session.scalar("SELECT quote_ident(%s)", (cap["active"],)))
        index_sqls = []
        for ix in v["indexes"]:
            stmt = _index_sql(session, ix["definition"], v["schema"], ix["name"], v["name"],
                              derived_name(ix["name"], PREBUILT_SUFFIX), name)
            if stmt is None:
                index_sqls = None
                break
            index_sqls.append(stmt)
        if index_sqls is None:
            continue
        if reuse and relation(session, v["schema"], name) is not None:
            ready[v["name"]] = name      # waiting for approval: built by an earlier run
            continue
        try:
            with session.transaction():
                session.execute(sql.SQL("DROP MATERIALIZED VIEW IF EXISTS {}").format(
                    sql.Identifier(v["schema"], name)))
                session.execute(_create_view_sql(v, definition, name))
                for stmt in index_sqls:
                    session.execute(stmt)
                if not session.check_mode:
                    same = session.scalar(
                        "SELECT array_agg((attname, atttypid) ORDER BY attnum) = "
                        "(SELECT array_agg((attname, atttypid) ORDER BY attnum) FROM pg_attribute "
                        " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped) "
                        "FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                        (v["oid"], sql.Identifier(v["schema"], name).as_string(session.conn)))
                    if not same:
                        raise PartitioningError("columns differ")
        except (PartitioningError, psycopg2.Error):
            continue   # built under the lock instead (slower, still correct)
        ready[v["name"]] = name
    return ready


# --------------------------------------------------------------------------------------------
# The swap transaction
# --------------------------------------------------------------------------------------------

def _grant_sql(kind, schema, name, g):
    grantee = sql.SQL("PUBLIC") if g["grantee"] is None else sql.Identifier(g["grantee"])
    return sql.SQL("GRANT {} ON {} {} TO {}{}").format(
        sql.SQL(g["privilege"]), sql.SQL(kind), sql.Identifier(schema, name), grantee,
        sql.SQL(" WITH GRANT OPTION" if g["grantable"] else ""))


def _acl_key(g):
    return (g["grantee"] or "", g["privilege"], bool(g["grantable"]))


_ENABLE = {"O": "ENABLE", "D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}


def swap_statements(session, cap, active_new, active_index_suffix, standby_index_suffix,
                    prebuilt, state_schema, table_name, lock_timeout_ms=50):
    """The statements of the swap, in order: a list of (label, Composable or callable).

    A callable entry runs a read inside the transaction (identity maxima, pending keys) and
    returns further statements. Everything else is decided from ``cap`` before the lock.
    """
    schema, active, standby = cap["schema"], cap["active"], cap["standby"]
    A_now, S_now = (schema, active), (schema, standby)
    A_end, S_end = (schema, active_new), (schema, active)   # after the renames
    steps = []

    def add(stmt):
        steps.append(stmt)

    # 1. locks: outermost views first, then the tables (a reader's order: view, then table)
    # (LOCK TABLE refuses materialized views: their DROP takes its lock, under the same timeout)
    lockable = [(v["schema"], v["name"]) for v in sorted(cap["views"], key=lambda v: -v["depth"]) if v["kind"] == "v"]
    lockable += [A_now, S_now]
    add(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal("%dms" % int(lock_timeout_ms))))
    add(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
        sql.SQL(", ").join(sql.Identifier(*r) for r in lockable)))
    # when the locks were granted: swap_lock_ms is measured from here (server clock)
    add(sql.SQL("SELECT set_config('dbops.lock_at', clock_timestamp()::text, true)"))

    # 2. pending keys, reconciled active -> standby (nobody writes under the lock)
    for stmt in reconcile_statements(cap, state_schema, table_name, A_now, S_now):
        add(stmt)

    # 3. the sync triggers on the active, and their functions
    for stmt in sync.drop_statements(cap["sync_triggers"]):
        add(stmt)

    # 4. dependent views (outermost first)
    for v in sorted(cap["views"], key=lambda v: (-v["depth"], v["name"])):
        kind = "MATERIALIZED VIEW" if v["kind"] == "m" else "VIEW"
        add(sql.SQL("DROP {} {}").format(sql.SQL(kind), sql.Identifier(v["schema"], v["name"])))

    # 5. index and constraint names, then the tables
    standby_by_name = dict((i["name"], i) for i in cap["standby_indexes"])
    renames_standby = []
    used = set()
    for ix in cap["indexes"]:
        target = None
        if ix["is_primary"]:
            target = next((s for s in cap["standby_indexes"] if s["is_primary"]), None)
        if target is None:
            target = standby_by_name.get(derived_name(ix["name"], standby_index_suffix))
        if target is not None and target["name"] not in used:
            used.add(target["name"])
            renames_standby.append((target, ix["name"]))
    for ix in cap["indexes"]:
        new = derived_name(ix["name"], active_index_suffix)
        if ix["constraint_name"]:
            add(sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                sql.Identifier(*A_now), sql.Identifier(ix["constraint_name"]), sql.Identifier(new)))
        else:
            add(sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(schema, ix["name"]), sql.Identifier(new)))
    for target, name in renames_standby:
        if target["name"] == name:
            continue
        if target["constraint_name"]:
            add(sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                sql.Identifier(*S_now), sql.Identifier(target["constraint_name"]), sql.Identifier(name)))
        else:
            add(sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(schema, target["name"]),
                                                              sql.Identifier(name)))
    # outbound foreign keys: names are per table, but the twin's carry a suffix (twin.py)
    standby_fks = set(cap.get("standby_fks") or [])
    for fk in cap.get("fks") or []:
        theirs = derived_name(fk, standby_index_suffix)
        if theirs in standby_fks and fk not in standby_fks:
            add(sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                sql.Identifier(*A_now), sql.Identifier(fk), sql.Identifier(derived_name(fk, active_index_suffix))))
            add(sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                sql.Identifier(*S_now), sql.Identifier(theirs), sql.Identifier(fk)))
    add(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(*A_now), sql.Identifier(active_new)))
    add(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(*S_now), sql.Identifier(active)))

    # 6. owner, grants, comment, RLS
    if cap["standby_owner"] != cap["owner"]:
        add(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(*S_end), sql.Identifier(cap["owner"])))
    have = set(_acl_key(g) for g in cap["standby_acl"])
    for g in cap["acl"]:
        if _acl_key(g) not in have:
            add(_grant_sql("TABLE", schema, active, g))
    if (cap["standby_comment"] or None) != (cap["comment"] or None):
        add(sql.SQL("COMMENT ON TABLE {} IS {}").format(sql.Identifier(*S_end), sql.Literal(cap["comment"])))
    if cap["rls"]:
        add(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(sql.Identifier(*S_end)))
        add(sql.SQL("ALTER TABLE {} DISABLE ROW LEVEL SECURITY").format(sql.Identifier(*A_end)))
    if cap["rls_forced"]:
        add(sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(sql.Identifier(*S_end)))
        add(sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(sql.Identifier(*A_end)))

    # sequences: serial ones change owner; identity columns as the active had them, above its max
    for seq in cap["sequences"]:
        if not seq["identity"]:
            add(sql.SQL("ALTER SEQUENCE {} OWNED BY {}").format(
                sql.Identifier(seq["schema"], seq["name"]), sql.Identifier(schema, active, seq["column"])))
    standby_cols = dict((c["name"], c) for c in cap["standby_columns"])
    for col in cap["columns"]:
        if not col["identity"]:
            continue
        kind = "ALWAYS" if col["identity"] == "a" else "BY DEFAULT"
        scol = standby_cols.get(col["name"]) or {}
        if not scol.get("identity"):
            add(sql.SQL("ALTER TABLE {} ALTER COLUMN {} ADD GENERATED {} AS IDENTITY").format(
                sql.Identifier(*S_end), sql.Identifier(col["name"]), sql.SQL(kind)))
        elif scol["identity"] != col["identity"]:
            add(sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET GENERATED {}").format(
                sql.Identifier(*S_end), sql.Identifier(col["name"]), sql.SQL(kind)))
        add(identity_restart(cap, A_end, S_end, col["name"]))

    # 7. the application's triggers: on the standby as they were on the active; off on the active
    standby_trigs = set(t["name"] for t in cap["standby_triggers"])
    for t in cap["triggers"]:
        if t["name"] not in standby_trigs:
            # pg_get_triggerdef names the table as it was (schema-qualified): after the renames that
            # name is the standby's.
            add(sql.SQL(t["definition"]))
        add(sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
            sql.Identifier(*S_end), sql.SQL(_ENABLE.get(t["enabled"], "ENABLE")), sql.Identifier(t["name"])))
        add(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(sql.Identifier(*A_end), sql.Identifier(t["name"])))

    # 8. views re-created (innermost first), pre-built materialized views renamed into place
    for v in sorted(cap["views"], key=lambda v: (v["depth"], v["name"])):
        kind = "MATERIALIZED VIEW" if v["kind"] == "m" else "VIEW"
        target = sql.Identifier(v["schema"], v["name"])
        if v["name"] in prebuilt:
            add(sql.SQL("ALTER MATERIALIZED VIEW {} RENAME TO {}").format(
                sql.Identifier(v["schema"], prebuilt[v["name"]]), sql.Identifier(v["name"])))
            for ix in v["indexes"]:
                add(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier(v["schema"], derived_name(ix["name"], PREBUILT_SUFFIX)), sql.Identifier(ix["name"])))
        else:
            add(_create_view_sql(v, v["definition"]))
            for ix in v["indexes"]:
                add(sql.SQL(ix["definition"]))
        add(sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(kind), target, sql.Identifier(v["owner"])))
        for g in v["acl"]:
            add(_grant_sql("TABLE", v["schema"], v["name"], g))
        if v["comment"] is not None:
            add(sql.SQL("COMMENT ON {} {} IS {}").format(sql.SQL(kind), target, sql.Literal(v["comment"])))
        for c in v.get("column_comments") or []:
            add(sql.SQL("COMMENT ON COLUMN {} IS {}").format(sql.Identifier(v["schema"], v["name"], c["column"]),
                                                             sql.Literal(c["comment"])))
        if v["name"] not in prebuilt:
            for t in v.get("triggers") or []:
                add(sql.SQL(t["definition"]))
                if t["enabled"] != "O":
                    add(sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
                        target, sql.SQL(_ENABLE.get(t["enabled"], "ENABLE")), sql.Identifier(t["name"])))

    # 9. publications
    for p in cap["publications"]:
        add(sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(sql.Identifier(p["name"]), sql.Identifier(*A_end)))
        stmt = sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(sql.Identifier(p["name"]), sql.Identifier(*S_end))
        if p.get("columns"):
            stmt += sql.SQL(" ({})").format(sql.SQL(", ").join(sql.Identifier(c) for c in p["columns"]))
        if p.get("qual"):
            stmt += sql.SQL(" WHERE ({})").format(sql.SQL(p["qual"]))   # pg_get_expr: PostgreSQL's deparse
        add(stmt)
    return steps


def reconcile_statements(cap, state_schema, table_name, src, dst):
    """Pending keys of ``table_name``: delete ``dst``'s rows of each key, copy ``src``'s (under the lock).

    Under ACCESS EXCLUSIVE nobody writes the table, and every pending entry was committed by a
    transaction that held a lock on it: the three statements see the same set of keys. Keys are
    logged by the original's primary key, the shorter of the two (the partitioned table's adds
    the partition key).
    """
    pk_cols = min(cap["pk"], cap["standby_pk"], key=len)
    generated = set(c["name"] for c in cap["standby_columns"] if c["generated"])
    standby_cols = set(c["name"] for c in cap["standby_columns"])
    cols = [c["name"] for c in cap["columns"]
            if not c["generated"] and c["name"] not in generated and c["name"] in standby_cols]
    pending = sql.SQL("(SELECT pk FROM {} WHERE table_name = {})").format(
        sql.Identifier(state_schema, "pending_keys"), sql.Literal(table_name))
    return [
        sql.SQL("SELECT set_config('dbops.reconciled', (SELECT count(DISTINCT pk) FROM {} WHERE table_name = {})::text, "
                "true)").format(sql.Identifier(state_schema, "pending_keys"), sql.Literal(table_name)),
        sql.SQL("DELETE FROM {} AS d WHERE {} IN {}").format(sql.Identifier(*dst), key_json(pk_cols, "d"),
                                                             pending),
        sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} AS s WHERE {} IN {}").format(
            sql.Identifier(*dst), sql.SQL(", ").join(sql.Identifier(c) for c in cols),
            sql.SQL(", ").join(sql.Identifier("s", c) for c in cols), sql.Identifier(*src),
            key_json(pk_cols, "s"), pending),
        sql.SQL("DELETE FROM {} WHERE table_name = {}").format(sql.Identifier(state_schema, "pending_keys"),
                                                               sql.Literal(table_name)),
    ]


def identity_restart(cap, src, dst, column):
    """The standby's identity sequence continues above every value the active used: its maximum
    and its own identity sequence's last value (HP10). Runs under the lock, after the renames."""
    seq = next((q for q in cap["sequences"] if q["identity"] and q["column"] == column), None)
    last = sql.SQL("NULL::bigint")
    if seq:
        last = sql.SQL("(SELECT last_value FROM pg_sequences WHERE schemaname = {} AND sequencename = {})").format(
            sql.Literal(seq["schema"]), sql.Literal(seq["name"]))
    return sql.SQL("SELECT setval(pg_get_serial_sequence({}, {}), greatest((SELECT max({}) FROM {}), {}, 1))").format(
        sql.Literal(_regclass_text(dst)), sql.Literal(column),
        sql.Identifier(column), sql.Identifier(*src), last)


def _regclass_text(rel):
    """``schema.name`` quoted the way regclass input expects (double quotes, doubled inside)."""
    return ".".join('"%s"' % part.replace('"', '""') for part in rel)


def _is_retryable(exc):
    return getattr(exc, "pgcode", None) in (LOCK_NOT_AVAILABLE, DEADLOCK)


LOCK_TIME_SQL = ("SELECT (extract(epoch FROM clock_timestamp() - current_setting('dbops.lock_at')::timestamptz) * 1000)"
                 "::float8 AS ms, current_setting('dbops.reconciled')::int AS reconciled")


def swap_tables(session, cap, active_new, active_index_suffix, standby_index_suffix, prebuilt,
                state_schema, table_name, lock_timeout_ms=50, retries=30, backoff=100, finish=()):
    """Run the swap transaction with retries. Returns dict(lock_ms, attempts, retries=[...], reconciled).

    Every statement is decided before the transaction, and the whole transaction goes to the server
    in ONE round trip (then COMMIT): the lock is held for the server's work, not for client round
    trips. ``finish`` are further statements run last inside it (the reverse sync, the state row).
    ``lock_ms`` = server time from the granted LOCK to the end of the statements + the COMMIT's
    round trip as the module measured it. On the final failure a PartitioningError names the
    blockers; every attempt was rolled back, nothing changed.
    """
    stmts = swap_statements(session, cap, active_new, active_index_suffix, standby_index_suffix,
                            prebuilt, state_schema, table_name, lock_timeout_ms) + list(finish)
    texts = [session.as_text(x).strip().rstrip(";").strip() for x in stmts]
    texts = [t for t in texts if t]
    session.queries.extend(texts)
    session.changed = True
    if session.check_mode:
        return dict(lock_ms=None, attempts=0, retries=[], reconciled=0)
    batch = ";\n".join(texts + [LOCK_TIME_SQL])
    attempts = max(0, int(retries)) + 1
    report = []
    conn = session.conn
    for attempt in range(attempts):
        conn.autocommit = False
        try:
            cur = conn.cursor()
            try:
                cur.execute(batch)
                server_ms, reconciled = cur.fetchone()
            finally:
                cur.close()
            t0 = time.monotonic()
            conn.commit()
            lock_ms = server_ms + (time.monotonic() - t0) * 1000.0
            return dict(lock_ms=lock_ms, attempts=attempt + 1, retries=report, reconciled=reconciled)
        except psycopg2.Error as e:
            conn.rollback()
            conn.autocommit = True   # the blockers are read outside any transaction
            if not _is_retryable(e):
                raise
            blockers = blocking_sessions(session, [(cap["schema"], cap["active"]), (cap["schema"], cap["standby"])])
            report.append("attempt %d: %s; blocking: %s" % (attempt + 1, (e.pgerror or str(e)).strip().splitlines()[0],
                                                            describe_blockers(blockers)))
            if attempt + 1 < attempts:
                time.sleep(backoff_ms(attempt, backoff) / 1000.0)
                continue
            raise PartitioningError(
                "The swap of %s could not get its locks within %d ms in %d attempts; nothing was changed. "
                "Blocking: %s. Let those transactions finish (or end them), then run again."
                % (table_name, int(lock_timeout_ms), attempts, describe_blockers(blockers)),
                blockers=blockers, retries=report)
        finally:
            conn.autocommit = True
    return None  # pragma: no cover


# --------------------------------------------------------------------------------------------
# Checks shared by switchover, rollback and cleanup
# --------------------------------------------------------------------------------------------



def drop_prebuilt(session, cap, prebuilt):
    for v in cap["views"]:
        if v["name"] in prebuilt:
            session.execute(sql.SQL("DROP MATERIALIZED VIEW IF EXISTS {}").format(
                sql.Identifier(v["schema"], prebuilt[v["name"]])))


# --------------------------------------------------------------------------------------------
# Phase 3: the switchover
# --------------------------------------------------------------------------------------------

def _state():
    from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_mod
    return state_mod


def switchover(session, templates, table, state_schema="partitioning", lock_timeout_ms=50, swap_retries=30,
               max_xact_age_s=60, max_replica_lag_s=30, require_approval=False, final_check="full",
               analyze=True, backoff_ms_base=100):
    """Switch ``table`` to its partitioned twin. Returns the module result (changed, msg, ...)."""
    from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import parse_table
    st = _state()
    schema, name = parse_table(table)
    table_name = qualified(schema, name)
    row = st.get_table(session, state_schema, table_name)
    if row is None:
        raise PartitioningError("%s is not being migrated (no state row in %s.tables): run phase 1 and 2 first."
                                % (table_name, state_schema))
    if row["phase"] in ("switched", "cleaned"):
        return dict(changed=False, table=table_name, phase=row["phase"],
                    msg="%s is already switched over (phase %s)." % (table_name, row["phase"]),
                    swap_lock_ms=row.get("swap_lock_ms"))
    if row["phase"] != "verified":
        raise PartitioningError("%s is in phase %r: the switchover needs phase 'verified' (backfill complete and a "
                                "full verification passed; run phase2_migrate.yml)." % (table_name, row["phase"]))
    twin, old = row["twin_relname"], row["old_relname"]
    st.lock_table_work(session, table_name)
    sync.refuse_if_drifted(session, state_schema, row, "Switchover")
    if relation(session, schema, old) is not None:
        raise PartitioningError("%s already exists: it would be overwritten by the original; rename or drop it."
                                % qualified(schema, old))
    cap = capture(session, schema, name, twin)
    problems = refusals(cap)
    oids = [cap["active_oid"], cap["standby_oid"]] + [v["oid"] for v in cap["views"]]
    holders = long_transactions(session, oids, max_xact_age_s)
    if holders:
        problems.append("transactions older than %ss hold a lock on the table or its views (the swap would "
                        "wait for them): %s" % (max_xact_age_s, describe_blockers(holders)))
    lag = replica_lag_s(session)
    if lag > float(max_replica_lag_s):
        problems.append("replica replay lag is %.1fs (limit %ss)" % (lag, max_replica_lag_s))
    check = None
    if final_check == "full" and not problems:
        cols = [c["name"] for c in cap["columns"] if not c["generated"]]
        check = compare_for_swap(session, state_schema, table_name, (schema, name), (schema, twin), cols, cap["pk"])
        if not check["equal"]:
            problems.append("the last check found %s and %s different (rows %d vs %d, checksums %s vs %s); "
                            "run phase2_migrate.yml to reconcile and verify again"
                            % (table_name, qualified(schema, twin), check["rows_a"], check["rows_b"],
                               check["checksum_a"], check["checksum_b"]))
    if problems:
        raise PartitioningError("Switchover of %s refused, nothing changed: %s." % (table_name, "; ".join(problems)),
                                problems=problems, blockers=holders)
    warnings = []
    for p in cap["publications"]:
        if not p["via_root"]:
            warnings.append("publication %s has publish_via_partition_root = false: subscribers will see the "
                            "partitions' names (HP12)" % p["name"])
    missing_policies = sorted(set(cap["policies"]) - set(cap["standby_policies"]))
    if missing_policies:
        raise PartitioningError("Switchover of %s refused: the twin lacks the RLS policies %s (phase 1 creates them)."
                                % (table_name, ", ".join(missing_policies)))

    waiting = require_approval and not row["switchover_approved"]
    before = len(session.queries)
    # while waiting, a pre-built view is built once (a second run changes nothing); the run that
    # swaps builds them fresh
    prebuilt = prebuild_matviews(session, cap, reuse=waiting)
    built = len(session.queries) > before
    late = [v["name"] for v in cap["views"] if v["kind"] == "m" and v["name"] not in prebuilt]
    if late:
        warnings.append("materialized views built under the lock (could not be pre-built): %s" % ", ".join(late))
    if waiting:
        return dict(changed=built, table=table_name, phase=row["phase"],
                    waiting_for_approval=True, warnings=warnings, final_check=check,
                    msg="%s is ready to switch over, waiting for approval: SELECT %s.approve_switchover(%s); "
                        "then run again." % (table_name, state_schema, "'%s'" % table_name))

    spec = sync.sync_spec(schema, name, table_name, row["partition_key"])
    captured = dict(row.get("captured") or {})
    captured["switchover"] = dict((k, cap[k]) for k in ("triggers", "views", "publications", "sequences",
                                                        "rls", "rls_forced", "owner", "comment"))
    captured["switchover"]["views"] = [dict((k, v) for k, v in x.items() if k != "oid") for x in cap["views"]]

    # the reverse sync, rendered now from the catalog as it will be after the renames: the new
    # table is today's twin (same columns), <table>_old is today's original (its primary key)
    finish = sync.install_statements(session, templates, state_schema, spec, (schema, twin), (schema, name),
                                     (schema, name), (schema, old))
    finish.append(sql.SQL("UPDATE {} SET phase = 'switched', captured = {}::jsonb, switched_at = now(), "
                          "swap_lock_ms = extract(epoch FROM clock_timestamp() - "
                          "current_setting('dbops.lock_at')::timestamptz) * 1000, updated_at = now() "
                          "WHERE table_name = {}").format(sql.Identifier(state_schema, "tables"),
                                                          sql.Literal(st.dumps(captured)), sql.Literal(table_name)))
    result = swap_tables(session, cap, old, "_old", "_p", prebuilt, state_schema, table_name,
                         lock_timeout_ms=lock_timeout_ms, retries=swap_retries, backoff=backoff_ms_base,
                         finish=finish)
    if not session.check_mode:
        # the lock time including COMMIT, measured from the granted LOCK to the returned COMMIT
        session.execute(sql.SQL("UPDATE {} SET swap_lock_ms = %s WHERE table_name = %s").format(
            sql.Identifier(state_schema, "tables")), (result["lock_ms"], table_name), record=False)
    if analyze:
        session.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, name)))
    st.record_run(session, state_schema, table_name, "switchover",
                  details=dict(lock_ms=result["lock_ms"], attempts=result["attempts"], retries=result["retries"]))
    if session.check_mode:
        return dict(changed=True, table=table_name, phase=row["phase"], final_check=check, warnings=warnings,
                    msg="%s would be switched over to the partitioned table: the swap's statements are in queries "
                        "(nothing changed)" % table_name)
    return dict(changed=True, table=table_name, phase="switched", swap_lock_ms=result["lock_ms"],
                attempts=result["attempts"], retries=result["retries"], reconciled=result["reconciled"],
                final_check=check, warnings=warnings,
                msg="%s switched to the partitioned table in %s attempt(s); lock held %.1f ms"
                    % (table_name, result["attempts"], result["lock_ms"] or 0))
