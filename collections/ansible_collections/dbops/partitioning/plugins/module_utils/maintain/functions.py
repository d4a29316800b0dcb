# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The maintenance functions in the database: the one implementation of maintenance.

``templates/sql/maintenance/*.sql.j2`` (rendered into the state schema) hold the logic: calendar
and names (the SQL twin of bounds.py), the plans, the DDL steps under the lock budget, and the
runbook's functions built on them. The modules (premake.py, retention.py) plan with the same
functions and run the same steps, one per transaction; Python adds only what SQL cannot do:
retries across transactions, ``DETACH ... CONCURRENTLY``, pg_dump, and check mode.

``ensure_functions`` installs them, again only when their rendered text changed (a digest in
``<state>.installed_sql``); an upgrade drops the routines the previous version made and creates
the new ones in one transaction. ``functions_schema`` says where to call them: in check mode,
when they are missing or out of date, the ones that need no state table are created in the
session's ``pg_temp`` (gone when it disconnects) so that a check run plans exactly as a real one.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import re

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import TUNING

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None

COMPONENT = "maintenance"
TEMPLATE_DIR = "maintenance/"
# What check mode installs into pg_temp: everything that plans and steps, and the monitoring
# (partition_stats reads through it), nothing that needs a state table to exist at creation (the
# runbook's maintenance functions).
CHECK_MODE_PARTS = ("maintenance/10_calendar", "maintenance/20_partitions", "maintenance/30_steps",
                    "maintenance/50_monitoring")
# What the first user's runbook calls unqualified: partitioning_runbook_schema gets thin wrappers.
RUNBOOK_OBJECTS = ["create_next_year_partitions", "archive_old_partitions", "maintain_partition_system",
                   "create_quarterly_partition", "get_partition_stats", "analyze_partition_performance",
                   "partition_sizes"]
_OBJECT = re.compile(r'CREATE (?:OR REPLACE )?(FUNCTION|PROCEDURE|VIEW) "((?:[^"]|"")+)"\.([a-z_][a-z0-9_]*)')


def template_names(templates):
    return sorted(n for n in templates.texts if n.startswith(TEMPLATE_DIR))


def render(session, templates, schema, state_schema, names=None):
    """The SQL text of the maintenance functions for ``schema`` (their home) and ``state_schema``."""
    holder = sql.SQL(state_store.WORK_HOLDER_SQL).format(
        key=sql.SQL("{} || p_table_name").format(sql.Literal(state_store.ADVISORY_PREFIX)))
    context = dict(schema=schema, state=state_schema, default_budget_ms=TUNING["lock_budget_ms"][0],
                   default_archive_schema=TUNING["archive_schema"][0], holder_sql=holder,
                   work_key_prefix=state_store.ADVISORY_PREFIX)
    return "\n".join(templates.render(name, session.conn, **context)
                     for name in (names or template_names(templates)))


def digest(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def objects_of(text):
    """[(kind, name)] of the routines and views a rendered text creates."""
    return sorted(set((m.group(1), m.group(3)) for m in _OBJECT.finditer(text)))


def _installed(session, state_schema):
    if state_store.installed_version(session, state_schema) < 3:
        return None
    rows = session.query(sql.SQL("SELECT digest, objects FROM {} WHERE component = %s").format(
        sql.Identifier(state_schema, "installed_sql")), (COMPONENT,))
    return rows[0] if rows else None


def is_current(session, templates, state_schema):
    row = _installed(session, state_schema)
    return bool(row) and row["digest"] == digest(render(session, templates, state_schema, state_schema))


def ensure_functions(session, templates, state_schema):
    """Install or upgrade the maintenance functions in ``state_schema``; True when something changed
    (in check mode: would change; the statements go to ``queries``)."""
    changed = state_store.ensure_state_schema(session, templates, state_schema)
    text = render(session, templates, state_schema, state_schema)
    row = _installed(session, state_schema)
    if row and row["digest"] == digest(text):
        return changed
    new = objects_of(text)
    with session.transaction():
        routines = sorted(set(name for kind, name in new if kind != "VIEW")
                          | set(o.split(" ", 1)[1] for o in (row["objects"] if row else []) if not o.startswith("VIEW ")))
        for old in session.query(
                "SELECT p.oid::regprocedure::text AS signature FROM pg_catalog.pg_proc p "
                "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s AND p.proname = ANY (%s) "
                "ORDER BY 1", (state_schema, routines)):
            session.execute(sql.SQL("DROP ROUTINE {}").format(sql.SQL(old["signature"])))   # server-deparsed
        session.execute(text)
        session.execute(sql.SQL(
            "INSERT INTO {} (component, digest, objects) VALUES (%s, %s, %s) ON CONFLICT (component) DO UPDATE "
            "SET digest = EXCLUDED.digest, objects = EXCLUDED.objects, installed_at = now()").format(
                sql.Identifier(state_schema, "installed_sql")),
            (COMPONENT, digest(text), ["%s %s" % o for o in new]))
    return True


def functions_schema(session, templates, state_schema):
    """The schema to call the maintenance functions in: the state schema (installed or upgraded
    first when needed), or in check mode, when they are not current there, ``pg_temp``."""
    if is_current(session, templates, state_schema):
        return state_schema
    if not session.check_mode:
        ensure_functions(session, templates, state_schema)
        return state_schema
    ensure_functions(session, templates, state_schema)          # recorded in queries, nothing runs
    return _in_pg_temp(session, templates, state_schema)


def reading_schema(session, templates, state_schema):
    """The schema to read the monitoring view and functions in without installing anything: the
    state schema when they are current there, else ``pg_temp`` (the session's own, gone when it
    disconnects)."""
    if is_current(session, templates, state_schema):
        return state_schema
    return _in_pg_temp(session, templates, state_schema)


def _in_pg_temp(session, templates, state_schema):
    if session.scalar("SELECT to_regprocedure('pg_temp.get_partition_stats(regclass)') IS NOT NULL"):
        return "pg_temp"                                        # made earlier in this session
    text = render(session, templates, "pg_temp", state_schema, CHECK_MODE_PARTS)
    cur = session.conn.cursor()
    try:
        # the steps' bodies name state tables that may not exist yet: they are never run in check mode
        cur.execute("SET check_function_bodies = off")
        cur.execute(text)
        cur.execute("RESET check_function_bodies")
    finally:
        cur.close()
    return "pg_temp"


def install_wrappers(session, templates, state_schema, runbook_schema, names=None):
    """Thin wrappers of the runbook's functions in ``runbook_schema``; returns what was (or, in
    check mode, would be) created."""
    names = list(names or RUNBOOK_OBJECTS)
    stmt = sql.SQL("SELECT * FROM {}(%s, %s, %s) AS w(created)").format(
        sql.Identifier(state_schema, "install_runbook_wrappers"))
    if session.check_mode:
        if is_current(session, templates, state_schema):
            made = [r["created"] for r in session.query(stmt, (runbook_schema, names, True))]
        else:                       # the functions they wrap are not installed yet: all of them
            made = ["%s.%s" % (runbook_schema, n) for n in names]
    else:
        with session.transaction():
            made = [r["created"] for r in session.query(stmt, (runbook_schema, names, False))]
    if made:
        session.queries.append(session.as_text(stmt, (runbook_schema, names, False)))
        session.changed = True
    return made
