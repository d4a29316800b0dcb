# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state schema (default ``partitioning``): install, migrate, read and write.

One row per managed table in ``<schema>.tables`` records its phase, the backfill
checkpoint and the verification; ``<schema>.runs`` keeps the history. Versions of the
schema are the templates ``state/NNN_*.sql.j2``, applied in order, each once.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import display

try:
    from psycopg2 import sql
    from psycopg2.extras import Json
except ImportError:  # pragma: no cover
    sql = None
    Json = None

PHASES = ("prepared", "copying", "copied", "verified", "switched", "cleaned", "rolled_back")
# After the swap: phases 1 and 2 are over, a rerun of their playbooks changes nothing.
SWITCHED_PHASES = ("switched", "cleaned")
_JSON_FIELDS = ("spec", "backfill_upper", "checkpoint", "verification", "dropped_foreign_keys", "captured")


def migrations(templates):
    """``[(version, template_name)]`` of the state schema, in order."""
    found = []
    for name in templates.texts:
        m = re.match(r"^state/(\d+)_", name)
        if m:
            found.append((int(m.group(1)), name))
    return sorted(found)


# Whether the state schema exists and this role may read it (a schema another role made, for
# instance a superuser's earlier run, is closed to a table owner without superuser).
_ACCESS_SQL = """
SELECT pg_catalog.pg_get_userbyid(n.nspowner) AS owner, current_user AS role,
       pg_catalog.has_schema_privilege(n.oid, 'USAGE') AS usage,
       (SELECT pg_catalog.has_table_privilege(c.oid, 'SELECT') FROM pg_catalog.pg_class c
         WHERE c.relnamespace = n.oid AND c.relname = 'schema_version') AS readable
  FROM pg_catalog.pg_namespace n WHERE n.nspname = %s
"""


def installed_version(session, schema):
    """The version of the state schema ``schema`` (0 when it is absent); refuses, naming the fix,
    when the role may not read it."""
    access = session.query(_ACCESS_SQL, (schema,))
    if not access or access[0]["readable"] is None and access[0]["usage"]:
        return 0
    a = access[0]
    if not (a["usage"] and a["readable"]):
        raise PartitioningError(
            "The state schema %s belongs to %s and the role %s may not read it; every phase reads and writes it. "
            "GRANT %s TO %s (or run as %s, or give this table another partitioning_state_schema)."
            % (display(schema), display(a["owner"]), display(a["role"]), display(a["owner"]), display(a["role"]),
               display(a["owner"])))
    return session.scalar(sql.SQL("SELECT coalesce(max(version), 0) FROM {}").format(
        sql.Identifier(schema, "schema_version"))) or 0


def ensure_state_schema(session, templates, schema):
    """Apply the missing versions of the state schema; returns True when something changed."""
    current = installed_version(session, schema)
    changed = False
    for version, name in migrations(templates):
        if version <= current:
            continue
        text = templates.render(name, session.conn, schema=schema)
        with session.transaction():
            session.execute(text)
        changed = True
    return changed


def _decode(row):
    if row is None:
        return None
    row = dict(row)
    return row


def get_table(session, schema, table_name):
    """The state row of a table as a dict, or None (also when the state schema is absent)."""
    if installed_version(session, schema) == 0:
        return None
    rows = session.query(sql.SQL("SELECT * FROM {} WHERE table_name = %s").format(
        sql.Identifier(schema, "tables")), (table_name,))
    return _decode(rows[0]) if rows else None


def all_tables(session, schema):
    if installed_version(session, schema) == 0:
        return []
    return [_decode(r) for r in session.query(sql.SQL("SELECT * FROM {} ORDER BY table_name").format(
        sql.Identifier(schema, "tables")))]


def _value(key, value):
    if key in _JSON_FIELDS and value is not None:
        return Json(value)
    return value


def insert_table(session, schema, table_name, **fields):
    fields = dict(fields, table_name=table_name)
    cols = sorted(fields)
    stmt = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (table_name) DO NOTHING").format(
        sql.Identifier(schema, "tables"), sql.SQL(", ").join(sql.Identifier(c) for c in cols),
        sql.SQL(", ").join(sql.Placeholder(c) for c in cols))
    session.execute(stmt, dict((c, _value(c, fields[c])) for c in cols))


def update_table(session, schema, table_name, **fields):
    """Update fields of a table's state row (``updated_at`` moves too)."""
    if not fields:
        return
    cols = sorted(fields)
    stmt = sql.SQL("UPDATE {} SET {}, updated_at = now() WHERE table_name = %(table_name)s").format(
        sql.Identifier(schema, "tables"),
        sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c)) for c in cols))
    values = dict((c, _value(c, fields[c])) for c in cols)
    values["table_name"] = table_name
    session.execute(stmt, values)


def delete_table(session, schema, table_name):
    rels = ("pending_keys", "verify_ranges", "tables")
    if installed_version(session, schema) >= 2:
        rels = ("backfill_ranges",) + rels
    for rel in rels:
        session.execute(sql.SQL("DELETE FROM {} WHERE table_name = %s").format(sql.Identifier(schema, rel)),
                        (table_name,))


def record_run(session, schema, table_name, action, status="ok", details=None):
    """Append to the history of runs (only for runs that changed something)."""
    if session.check_mode:
        return
    session.execute(sql.SQL("INSERT INTO {} (table_name, action, status, finished_at, details) "
                            "VALUES (%s, %s, %s, now(), %s)").format(sql.Identifier(schema, "runs")),
                    (table_name, action, status, Json(details or {})))


ADVISORY_PREFIX = "dbops.partitioning:"
# The session holding a table's work lock (the maintenance functions in the database ask the same,
# templates/sql/maintenance): {key} is the lock's key text.
WORK_HOLDER_SQL = (
    "SELECT a.pid, a.application_name, a.client_addr::text AS client, a.state, a.backend_start, a.query_start "
    "FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a USING (pid) "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_catalog.pg_backend_pid() "
    "AND ((l.classid::bigint << 32) | l.objid::bigint) = pg_catalog.hashtextextended({key}, 0) LIMIT 1")


def advisory_key(table_name):
    return ADVISORY_PREFIX + table_name


def try_lock_table_work(session, table_name):
    """Take the per-table advisory lock; None when taken, else who holds it (a dict: pid,
    application_name, client, state, backend_start, query_start; values as text)."""
    got = session.scalar("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (advisory_key(table_name),))
    if got:
        return None
    holder = session.query(sql.SQL(WORK_HOLDER_SQL).format(key=sql.Placeholder()), (advisory_key(table_name),))
    return dict((k, str(v) if v is not None else None) for k, v in holder[0].items()) if holder else {}


def describe_holder(who):
    return "pid %s, %s, since %s" % (who.get("pid") or "?", who.get("application_name") or "?",
                                     who.get("backend_start") or "?")


def lock_table_work(session, table_name):
    """Take the per-table advisory lock so two runs never work on one table at once.

    Session-level: released when the module's connection closes, also when it is killed.
    """
    who = try_lock_table_work(session, table_name)
    if who is not None:
        raise PartitioningError("Another run is working on %s (%s); try again when it ends."
                                % (table_name, describe_holder(who)), holder=who)


def unlock_table_work(session, table_name):
    if session.conn.closed:
        return   # a session-level lock ends with its session
    session.scalar("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (advisory_key(table_name),))


def dumps(value):
    return json.dumps(value, default=str, sort_keys=True)
