# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every privilege that phases 1 to 4 will use, checked before anything changes (docs/design.md,
"Privileges").

A table owner without superuser (managed PostgreSQL) must not pass phases 1 and 2 and fail at
the switchover (``permission denied for schema analytics``), hours of copying later. So phase 1's
preflight asks, for the role it runs as, what each later step will do: the switchover drops and
re-creates the table's views and materialized views (and hands them back to their owners),
re-creates the application's triggers on the partitioned table, moves publication membership and
sequence ownership; phase 1 builds the twin with its statistics objects, foreign keys and
tablespaces, drops inbound foreign keys when told to, writes the state schema; retention
archives into the archive schema. A superuser has every privilege; for anyone else each missing
one is named with the GRANT (or ALTER) that gives it. The switchover asks ``switchover_problems``
again before its lock.

Everything here only reads: ``has_*_privilege`` and ``pg_has_role`` for the current role.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbops.partitioning.plugins.module_utils import sync
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import display, qualified

# The options of a role membership that let the member act as the role: to own what it owns
# ('USAGE': its privileges), and to give an object to it (ALTER ... OWNER TO: 'SET' from
# PostgreSQL 16 on, membership before).
_SET = {True: "'SET'", False: "'MEMBER'"}

# Views and materialized views the switchover drops and re-creates (HP9), as this role: their
# schema, their owner's privileges, the schemas their definition names (the new definition is
# parsed as this role), for materialized views the relations their query reads (it runs as
# this role when the view is rebuilt beside the old one), for views the relations their owner
# (the caller, for security_invoker) may not lock: LOCK TABLE on a view locks what it reads.
VIEWS_SQL = """
SELECT c.oid, n.nspname AS schema, c.relname AS name, c.relkind AS kind,
       pg_catalog.pg_get_userbyid(c.relowner) AS owner,
       pg_catalog.has_schema_privilege(n.oid, 'USAGE') AS schema_usage,
       pg_catalog.has_schema_privilege(n.oid, 'CREATE') AS schema_create,
       pg_catalog.pg_has_role(c.relowner, 'USAGE') AS owns,
       pg_catalog.pg_has_role(c.relowner, {set}) AS can_give,
       pg_catalog.has_schema_privilege(c.relowner, n.oid, 'CREATE') AS owner_create,
       ARRAY(SELECT DISTINCT x.nspname FROM pg_catalog.pg_rewrite r
               JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
               CROSS JOIN LATERAL (
                   SELECT o.relnamespace FROM pg_catalog.pg_class o
                    WHERE d.refclassid = 'pg_catalog.pg_class'::regclass AND o.oid = d.refobjid
                   UNION ALL SELECT o.pronamespace FROM pg_catalog.pg_proc o
                    WHERE d.refclassid = 'pg_catalog.pg_proc'::regclass AND o.oid = d.refobjid
                   UNION ALL SELECT o.typnamespace FROM pg_catalog.pg_type o
                    WHERE d.refclassid = 'pg_catalog.pg_type'::regclass AND o.oid = d.refobjid
                   UNION ALL SELECT o.oprnamespace FROM pg_catalog.pg_operator o
                    WHERE d.refclassid = 'pg_catalog.pg_operator'::regclass AND o.oid = d.refobjid
                   UNION ALL SELECT o.collnamespace FROM pg_catalog.pg_collation o
                    WHERE d.refclassid = 'pg_catalog.pg_collation'::regclass AND o.oid = d.refobjid) AS ns(oid)
               JOIN pg_catalog.pg_namespace x ON x.oid = ns.oid
              WHERE r.ev_class = c.oid AND x.oid <> n.oid AND NOT pg_catalog.has_schema_privilege(x.oid, 'USAGE')
              ORDER BY 1)::text[] AS unusable_schemas,
       ARRAY(SELECT rel.name FROM ({reads}) rel
              WHERE c.relkind = 'm' AND rel.oid <> ALL (%(tables)s)
                AND NOT pg_catalog.has_table_privilege(rel.oid, 'SELECT')
              ORDER BY 1)::text[] AS unreadable,
       ARRAY(SELECT rel.name FROM ({reads}) rel
              WHERE c.relkind = 'v' AND NOT pg_catalog.has_table_privilege(
                        CASE WHEN inv.invoker THEN (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
                             ELSE c.relowner END, rel.oid, {lock})
              ORDER BY 1)::text[] AS unlockable,
       inv.invoker
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 CROSS JOIN LATERAL (SELECT coalesce((SELECT option_value FROM pg_catalog.pg_options_to_table(c.reloptions)
                                       WHERE option_name = 'security_invoker'), 'false')::bool AS invoker) inv
 WHERE c.oid = ANY (%(oids)s)
 ORDER BY n.nspname, c.relname
""".replace("{reads}", """
SELECT DISTINCT o.oid, pg_catalog.quote_ident(ns.nspname) || '.' || pg_catalog.quote_ident(o.relname) AS name
  FROM pg_catalog.pg_rewrite r
  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
                             AND d.refclassid = 'pg_catalog.pg_class'::regclass
  JOIN pg_catalog.pg_class o ON o.oid = d.refobjid
  JOIN pg_catalog.pg_namespace ns ON ns.oid = o.relnamespace
 WHERE r.ev_class = c.oid AND o.oid <> c.oid""")

# The privileges that allow LOCK TABLE ... IN ACCESS EXCLUSIVE MODE (MAINTAIN from PostgreSQL 17 on).
_LOCK = {True: "'UPDATE, DELETE, TRUNCATE, MAINTAIN'", False: "'UPDATE, DELETE, TRUNCATE'"}

# Trigger functions the switchover attaches again (the application's triggers move to the
# partitioned table, INSTEAD OF triggers come back with their views): CREATE TRIGGER needs EXECUTE.
TRIGGER_FUNCTIONS_SQL = """
SELECT DISTINCT p.oid::regprocedure::text AS function, n.nspname AS schema,
       pg_catalog.has_schema_privilege(n.oid, 'USAGE') AS usage,
       pg_catalog.has_function_privilege(p.oid, 'EXECUTE') AS execute
  FROM pg_catalog.pg_trigger t
  JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE t.tgrelid = ANY (%(oids)s) AND NOT t.tgisinternal AND t.tgparentid = 0 AND t.tgname <> ALL (%(ours)s)
   AND NOT (pg_catalog.has_schema_privilege(n.oid, 'USAGE') AND pg_catalog.has_function_privilege(p.oid, 'EXECUTE'))
 ORDER BY 1
"""

# Owners this role must act as: publications it alters, sequences whose OWNED BY moves, tables
# whose foreign keys phase 1 drops, the state schema; and the owner it gives the twin to (ALTER
# TABLE ... OWNER TO, when the role is a member of the table's owner rather than the owner).
OWNERS_SQL = """
SELECT kind, name, pg_catalog.pg_get_userbyid(owner) AS owner, pg_catalog.pg_has_role(owner, 'USAGE') AS owns,
       kind <> 'twin' OR pg_catalog.pg_has_role(owner, {set}) AS can_give
  FROM (SELECT 'publication' AS kind, pg_catalog.quote_ident(pubname) AS name, pubowner AS owner
          FROM pg_catalog.pg_publication WHERE pubname = ANY (%(publications)s)
        UNION ALL
        SELECT 'sequence', c.oid::regclass::text, c.relowner FROM pg_catalog.pg_class c
         WHERE c.oid = ANY (%(sequences)s)
        UNION ALL
        SELECT 'table', c.oid::regclass::text, c.relowner FROM pg_catalog.pg_class c WHERE c.oid = ANY (%(tables)s)
        UNION ALL
        SELECT 'twin', c.oid::regclass::text, c.relowner FROM pg_catalog.pg_class c WHERE c.oid = %(twin_of)s
        UNION ALL
        SELECT 'schema', pg_catalog.quote_ident(nspname), nspowner FROM pg_catalog.pg_namespace
         WHERE nspname = %(state_schema)s) o
 ORDER BY 1, 2
"""

SCHEMA_SQL = """
SELECT n.oid IS NOT NULL AS present,
       coalesce(pg_catalog.has_schema_privilege(n.oid, 'USAGE') AND pg_catalog.has_schema_privilege(n.oid, 'CREATE'),
                pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE')) AS ok
  FROM (SELECT 1) one LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = %(schema)s
"""

# Where the twin puts things other than the table's schema: statistics objects' schemas and
# tablespaces need CREATE; the tables its foreign keys reference need REFERENCES on the columns.
CREATE_IN_SQL = """
SELECT 'schema' AS kind, nspname::text AS name FROM pg_catalog.pg_namespace
 WHERE nspname = ANY (%(schemas)s) AND NOT pg_catalog.has_schema_privilege(oid, 'CREATE')
UNION ALL
SELECT 'tablespace', spcname::text FROM pg_catalog.pg_tablespace
 WHERE spcname = ANY (%(tablespaces)s) AND NOT pg_catalog.has_tablespace_privilege(oid, 'CREATE')
ORDER BY 1, 2
"""

# A table its foreign key references: this role must name it (USAGE on its schema) and reference
# the columns (REFERENCES).
REFERENCES_SQL = """
SELECT pg_catalog.has_schema_privilege(n.oid, 'USAGE') AS usage,
       ARRAY(SELECT col FROM unnest(%(columns)s::text[]) col
              WHERE NOT pg_catalog.has_column_privilege(c.oid, col, 'REFERENCES'))::text[] AS missing
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s AND c.relname = %(name)s
"""

# Relations by name, without casting to regclass (which needs USAGE on their schema).
OIDS_SQL = """
SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest(%(schemas)s::text[], %(names)s::text[]))
"""


class _Findings:
    """Problems as "<what> needs ...: <missing>. Fix: <statements>." sentences, one per object."""

    def __init__(self, label, role):
        self.label, self.role, self.items = label, role, []

    def add(self, what, missing, fixes):
        if missing:
            self.items.append("%s: %s, as the role %s, which lacks %s. Fix: %s." % (
                self.label, what, display(self.role), ", ".join(missing), "; ".join(fixes)))

    def grant_role(self, owner, owns, can_give, new_syntax, or_instead=None):
        """What acting as ``owner`` lacks, and the GRANT that gives it (``or_instead``: another fix)."""
        if owns and can_give:
            return [], []
        if owns and new_syntax:
            return (["the SET option on its membership in %s" % display(owner)],
                    ["GRANT %s TO %s WITH SET TRUE" % (display(owner), display(self.role))])
        grant = "GRANT %s TO %s" % (display(owner), display(self.role))
        return ["the privileges of %s" % display(owner)], ["%s (or %s)" % (or_instead, grant) if or_instead else grant]


def switchover_problems(session, label, info):
    """What the switchover (and rollback, which runs it backwards) will need: views and
    materialized views, triggers, publications, sequences. One sentence per object."""
    role = session.scalar("SELECT current_user")
    new_syntax = session.server_version >= 160000
    f = _Findings(label, role)
    me = display(role)
    if info.views:
        maintain = session.server_version >= 170000
        for v in session.query(VIEWS_SQL.replace("{set}", _SET[new_syntax]).replace("{lock}", _LOCK[maintain]),
                               dict(oids=[v.oid for v in info.views], tables=[info.oid])):
            kind = "materialized view" if v["kind"] == "m" else "view"
            name = qualified(v["schema"], v["name"])
            missing, fixes = [], []
            schema_needs = [p for p, ok in (("USAGE", v["schema_usage"]), ("CREATE", v["schema_create"])) if not ok]
            if schema_needs:
                missing.append("%s on schema %s" % (" and ".join(schema_needs), display(v["schema"])))
                fixes.append("GRANT %s ON SCHEMA %s TO %s" % (", ".join(schema_needs), display(v["schema"]), me))
            lacks, grants = f.grant_role(v["owner"], v["owns"], v["can_give"], new_syntax)
            missing += lacks
            fixes += grants
            if not v["owner_create"]:
                missing.append("a schema its owner may create in (%s lacks CREATE on %s)"
                               % (display(v["owner"]), display(v["schema"])))
                fixes.append("GRANT CREATE ON SCHEMA %s TO %s" % (display(v["schema"]), display(v["owner"])))
            for schema in v["unusable_schemas"]:
                missing.append("USAGE on schema %s (its definition names objects there)" % display(schema))
                fixes.append("GRANT USAGE ON SCHEMA %s TO %s" % (display(schema), me))
            for rel in v["unreadable"]:
                missing.append("SELECT on %s (its query runs when it is rebuilt)" % rel)
                fixes.append("GRANT SELECT ON %s TO %s" % (rel, me))
            # the swap locks the view first (the order readers take); LOCK on a view locks what it
            # reads, checked as the view's owner (as the caller for security_invoker views)
            locker = me if v["invoker"] else display(v["owner"])
            for rel in v["unlockable"]:
                missing.append("that %s may lock %s (LOCK TABLE on a view locks what it reads, as %s; ACCESS "
                               "EXCLUSIVE needs %s)" % (locker, rel, "the caller" if v["invoker"] else "its owner",
                                                        "UPDATE, DELETE, TRUNCATE or MAINTAIN" if maintain
                                                        else "UPDATE, DELETE or TRUNCATE"))
                fixes.append("GRANT %s ON %s TO %s%s" % ("MAINTAIN" if maintain else "UPDATE", rel, locker,
                                                         "" if v["invoker"] else " (or ALTER VIEW %s OWNER TO %s)"
                                                         % (name, me)))
            f.add("%s %s (owner %s) is dropped and re-created by the switchover (HP9)" % (kind, name,
                                                                                          display(v["owner"])),
                  missing, fixes)
    oids = [info.oid] + [v.oid for v in info.views]
    for t in session.query(TRIGGER_FUNCTIONS_SQL, dict(oids=oids, ours=list(sync.TRIGGER_NAMES))):
        missing, fixes = [], []
        if not t["usage"]:
            missing.append("USAGE on schema %s" % display(t["schema"]))
            fixes.append("GRANT USAGE ON SCHEMA %s TO %s" % (display(t["schema"]), me))
        if not t["execute"]:
            missing.append("EXECUTE on %s" % t["function"])
            fixes.append("GRANT EXECUTE ON FUNCTION %s TO %s" % (t["function"], me))
        f.add("trigger function %s is attached again by the switchover" % t["function"], missing, fixes)
    _owners(session, f, new_syntax, publications=[p.name for p in info.publications if p.explicit],
            sequences=_oids(session, [(q.schema, q.name) for q in info.owned_sequences if not q.identity]))
    return f.items


def _oids(session, relations):
    relations = list(relations)
    return [r["oid"] for r in session.query(OIDS_SQL, dict(schemas=[r[0] for r in relations],
                                                           names=[r[1] for r in relations]))]


_OWNER_WHY = {
    "publication": "publication %s (owner %s): the switchover moves the table's membership (HP12)",
    "sequence": "sequence %s (owner %s): the switchover moves its OWNED BY to the partitioned table (HP10)",
    "table": "table %s (owner %s): phase 1 drops its foreign key that references the table (HP11)",
    "twin": "the twin of %s is given to the table's owner %s (ALTER TABLE ... OWNER TO)",
    "schema": "the state schema %s (owner %s) is written, and migrated, by every phase",
}


def _owners(session, f, new_syntax, publications=(), sequences=(), tables=(), twin_of=None, state_schema=None):
    args = dict(publications=list(publications), sequences=list(sequences), tables=list(tables), twin_of=twin_of,
                state_schema=state_schema)
    for o in session.query(OWNERS_SQL.replace("{set}", _SET[new_syntax]), args):
        if o["kind"] == "twin" and not o["owns"]:
            continue   # not even a member of the table's owner: preflight refuses that on its own
        instead = ("ALTER PUBLICATION %s OWNER TO %s" % (o["name"], display(f.role))
                   if o["kind"] == "publication" else None)
        lacks, grants = f.grant_role(o["owner"], o["owns"], o["can_give"], new_syntax, instead)
        f.add(_OWNER_WHY[o["kind"]] % (o["name"], display(o["owner"])), lacks, grants)


def _create_in_schema(session, f, schema, what):
    """``what`` creates in ``schema``, and creates the schema when it is missing."""
    row = session.query(SCHEMA_SQL, dict(schema=schema))[0]
    if not row["ok"]:
        me = display(f.role)
        f.add(what, ["USAGE and CREATE on schema %s" % display(schema)] if row["present"]
              else ["CREATE on the database (the schema %s does not exist yet)" % display(schema)],
              ["GRANT USAGE, CREATE ON SCHEMA %s TO %s" % (display(schema), me)] if row["present"]
              else ["CREATE SCHEMA %s AUTHORIZATION %s (as a role that may)" % (display(schema), me)])


def prepare_problems(session, spec, info, state_schema, runbook_schema=None):
    """What phase 1 itself, and maintenance later, will need beyond owning the table and creating
    in its schema (preflight checks those): the state schema, statistics objects' schemas,
    tablespaces, referenced tables, inbound foreign keys to drop, the archive schema, the runbook
    schema (``partitioning_runbook_schema``, when the play names one)."""
    label = spec.table_name
    role = session.scalar("SELECT current_user")
    me = display(role)
    f = _Findings(label, role)
    new_syntax = session.server_version >= 160000
    inbound = [fk.table for fk in info.referenced_by if tuple(fk.table) != (info.schema, info.name)]
    _owners(session, f, new_syntax, tables=_oids(session, inbound) if spec.inbound_foreign_keys == "drop" else [],
            twin_of=info.oid, state_schema=state_schema)

    schemas = sorted(set(s.schema for s in info.statistics) - {info.schema})
    tablespaces = sorted(set(t for t in [info.tablespace] + [i.tablespace for i in info.indexes] if t))
    for r in session.query(CREATE_IN_SQL, dict(schemas=schemas, tablespaces=tablespaces)):
        what = ("the twin's extended statistics are created in schema %s" if r["kind"] == "schema"
                else "the twin's partitions and indexes are created in tablespace %s") % display(r["name"])
        f.add(what, ["CREATE on %s %s" % (r["kind"], display(r["name"]))],
              ["GRANT CREATE ON %s %s TO %s" % (r["kind"].upper(), display(r["name"]), me)])

    for fk in info.foreign_keys:
        if tuple(fk.ref_table) == (info.schema, info.name):
            continue
        ref = session.query(REFERENCES_SQL, dict(schema=fk.ref_table[0], name=fk.ref_table[1],
                                                 columns=list(fk.ref_columns)))[0]
        missing, fixes = [], []
        if not ref["usage"]:
            missing.append("USAGE on schema %s" % display(fk.ref_table[0]))
            fixes.append("GRANT USAGE ON SCHEMA %s TO %s" % (display(fk.ref_table[0]), me))
        if ref["missing"]:
            missing.append("REFERENCES on %s (%s)" % (qualified(*fk.ref_table), ", ".join(ref["missing"])))
            fixes.append("GRANT REFERENCES (%s) ON %s TO %s" % (", ".join(display(c) for c in ref["missing"]),
                                                                qualified(*fk.ref_table), me))
        f.add("the twin's foreign key %s references %s" % (fk.name, qualified(*fk.ref_table)), missing, fixes)

    if spec.strategy == "range" and spec.retention_action == "archive":
        archive = spec.tuning["archive_schema"]
        _create_in_schema(session, f, archive, "retention_action archive moves old partitions into schema %s"
                          % display(archive))
    if runbook_schema:
        _create_in_schema(session, f, runbook_schema, "maintenance installs the runbook's functions into schema %s "
                                                      "(partitioning_runbook_schema)" % display(runbook_schema))
    return f.items
