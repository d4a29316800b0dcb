# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DDL on a table during its migration (docs/design.md, "DDL during a migration", HP18).

The sync function names the source's columns (that is what makes it as cheap as a hand-written
trigger), so an ``ALTER TABLE`` of the source could make it fail the application's writes. Three
parts keep every write working and bring the migration back in step with one re-run:

* **the shape** (``shape``): the source's columns, types, NOT NULL, generated/identity kinds and
  copied constraints as one md5 (``<state>.sync_shape(regclass)``, templates/sql/sync/shape.sql.j2).
  Every sync function records in its comment the shape it was generated for.
* **the guard**: where the role may create an event trigger (superuser, managed admin roles),
  ``partitioning_ddl_guard`` swaps an outdated function's body for its guarded twin in the DDL's own
  transaction, so the common path pays nothing. Elsewhere (a plain table owner) the function is
  the guarded one from the start: a write it cannot mirror is logged as a pending key.
* **drift** (``drift``): what differs between the source and its destination; the next phase
  refuses with it and with the playbook whose re-run repairs it; ``align`` is that repair (the
  destination's columns follow the source, rows whose values the sync could not carry are queued
  for the reconcile).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.dbops.partitioning.plugins.module_utils import sync_ladder
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_table
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import qualified

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    psycopg2 = None
    sql = None

EVENT_TRIGGER = "partitioning_ddl_guard"
INSUFFICIENT_PRIVILEGE = "42501"
_SHAPE = re.compile(r"shape=([0-9a-f]+)")

GUARD_SQL = """
SELECT e.evtenabled AS enabled FROM pg_catalog.pg_event_trigger e
JOIN pg_catalog.pg_proc p ON p.oid = e.evtfoid JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE e.evtname = %s AND n.nspname = %s AND p.proname = %s
"""
# event trigger -> (its template, the functions the template creates in order, the event trigger's
# last): the DDL guard, and the layout guard of the functions with a partition ladder (sync_ladder.py)
GUARDS = {EVENT_TRIGGER: ("sync/ddl_guard", ("ddl_guard",)),
          sync_ladder.LAYOUT_EVENT_TRIGGER: ("sync/layout_guard", ("sync_layout", "layout_guard"))}
_BODY = re.compile(r"\$(dbops_\w+)\$(.*?)\$\1\$", re.S)


def _text(session, rel):
    return sql.Identifier(*rel).as_string(session.conn)


def ensure_shape_function(session, templates, state_schema):
    text = templates.render("sync/shape", session.conn, state_schema=state_schema)
    body = text.split("$dbops_shape$")[1]
    have = session.query("SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                         "WHERE n.nspname = %s AND p.proname = 'sync_shape'", (state_schema,))
    if not have or have[0]["prosrc"] != body:
        session.execute(text)


def shape(session, state_schema, rel):
    """The md5 shape of ``rel`` now (None when the shape function is not installed yet, in check mode)."""
    if not session.scalar("SELECT to_regprocedure(%s) IS NOT NULL",
                          ("%s(regclass)" % _text(session, (state_schema, "sync_shape")),)):
        return None
    return session.scalar(sql.SQL("SELECT {}(%s::regclass)").format(sql.Identifier(state_schema, "sync_shape")),
                          (_text(session, rel),))


def recorded_shape(session, fn):
    """The shape the sync function ``fn`` was generated for (from its comment), or None."""
    comment = session.scalar("SELECT obj_description(to_regprocedure(%s), 'pg_proc')", ("%s()" % _text(session, fn),))
    m = _SHAPE.search(comment or "")
    return m.group(1) if m else None


def comment_text(shape_md5, guard, layout=None):
    """The comment of a sync function: the shape it was generated for, what guards it and, for a
    function with a partition ladder, the twin's layout it names (sync_ladder.py)."""
    text = "dbops.partitioning sync; shape=%s; ddl=%s" % (shape_md5 or "", "event-trigger" if guard else "guarded")
    return text + ("; layout=%s" % layout if layout else "")


def guard_installed(session, state_schema):
    return bool(session.query(GUARD_SQL, (EVENT_TRIGGER, state_schema, GUARDS[EVENT_TRIGGER][1][-1])))


def ensure_guard(session, templates, state_schema, row_trigger, suffixes, event_trigger=EVENT_TRIGGER):
    """True when the guard ``event_trigger`` (the DDL guard, or the layout guard) is in place for
    ``state_schema``, created now when missing and the role may create it; False when it may not
    (the sync functions are then guarded themselves, or have no ladder). Runs in the caller's
    transaction (a savepoint around the attempt)."""
    template, functions = GUARDS[event_trigger]
    rows = session.query(GUARD_SQL, (event_trigger, state_schema, functions[-1]))
    ctx = dict(state_schema=state_schema, row_trigger=row_trigger, event_trigger=event_trigger,
               suffixes=sorted(suffixes))
    if rows:
        text = templates.render(template, session.conn, create_event_trigger=False, **ctx)
        have = dict((r["proname"], r["prosrc"]) for r in session.query(
            "SELECT p.proname, p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s AND p.proname = ANY (%s)", (state_schema, list(functions))))
        if [have.get(f) for f in functions] != [body for _tag, body in _BODY.findall(text)]:
            try:
                _in_savepoint(session, text)
            except psycopg2.Error as e:   # not ours to replace: the guard stays as it is
                if getattr(e, "pgcode", None) != INSUFFICIENT_PRIVILEGE:
                    raise
        return True
    if session.scalar("SELECT count(*) FROM pg_event_trigger WHERE evtname = %s", (event_trigger,)):
        return False      # another state schema's guard: ours cannot take its name
    if session.check_mode:
        return bool(session.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
    try:
        _in_savepoint(session, templates.render(template, session.conn, create_event_trigger=True, **ctx))
    except psycopg2.Error as e:
        if getattr(e, "pgcode", None) != INSUFFICIENT_PRIVILEGE:
            raise
        return False
    return True


def _in_savepoint(session, text):
    session.query("SAVEPOINT dbops_guard")
    try:
        session.execute(text)
    except psycopg2.Error:
        session.query("ROLLBACK TO SAVEPOINT dbops_guard")
        raise
    session.query("RELEASE SAVEPOINT dbops_guard")


def _describe(session, rel):
    info = describe_table(session, *rel)
    if info is None:
        raise PartitioningError("Table %s does not exist." % qualified(*rel))
    return info


def _columns(session, rel):
    return dict((c.name, dict(name=c.name, type=c.type, not_null=c.not_null, generated=bool(c.generated)))
                for c in _describe(session, rel).columns)


def column_drift(session, src, dst):
    """Differences between the columns of ``src`` and ``dst`` that the sync cannot carry:
    dict(missing=[in src, not in dst], extra=[in dst, not in src], retyped=[(col, dst type, src type)],
    nullable=[NOT NULL in dst, not in src])."""
    s, d = _columns(session, src), _columns(session, dst)
    return dict(
        missing=[c for c in s if c not in d and not s[c]["generated"]],
        extra=[c for c in d if c not in s],
        retyped=[(c, d[c]["type"], s[c]["type"]) for c in s if c in d and d[c]["type"] != s[c]["type"]],
        nullable=[c for c in s if c in d and d[c]["not_null"] and not s[c]["not_null"]])


def drift(session, state_schema, src, dst, fn):
    """What the application's DDL changed on ``src`` since its sync function ``fn`` was generated,
    as sentences (empty: in step)."""
    out = []
    diff = column_drift(session, src, dst)
    if diff["missing"]:
        out.append("%s has column(s) %s that %s lacks" % (qualified(*src), ", ".join(diff["missing"]), qualified(*dst)))
    if diff["extra"]:
        out.append("column(s) %s of %s are gone from %s (dropped or renamed)"
                   % (", ".join(diff["extra"]), qualified(*dst), qualified(*src)))
    for col, was, now in diff["retyped"]:
        out.append("column %s is %s on %s but %s on %s" % (col, now, qualified(*src), was, qualified(*dst)))
    if diff["nullable"]:
        out.append("column(s) %s accept NULL on %s but not on %s"
                   % (", ".join(diff["nullable"]), qualified(*src), qualified(*dst)))
    recorded, now = recorded_shape(session, fn), shape(session, state_schema, src)
    if not out and recorded and now and recorded != now:
        out.append("the constraints of %s changed since its sync was generated" % qualified(*src))
    return out


def refuse_if_drifted(session, state_schema, src, dst, fn, table_name, what, playbook):
    problems = drift(session, state_schema, src, dst, fn)
    if problems:
        raise PartitioningError(
            "%s of %s refused, nothing changed: the table was altered during the migration (%s). The application's "
            "writes go on (the sync logs every row it cannot mirror); run %s again (-e partitioning_only=%s) to "
            "bring %s in step, then this playbook."
            % (what, table_name, "; ".join(problems), playbook, table_name, qualified(*dst)), drift=problems)


def primary_key(session, rel):
    return list(_describe(session, rel).pk_columns)


def align(session, src, dst, add_missing=False):
    """Bring ``dst``'s columns in step with ``src`` (the re-run that ``refuse_if_drifted`` names):
    columns gone from ``src`` are dropped from ``dst``, retyped ones converted, NOT NULL dropped where
    ``src`` dropped it, and (``add_missing``) columns ``dst`` lacks added (phase 1 adds them like the
    rest of the twin). Returns (what was done, the columns whose values the sync could not carry:
    once the sync function is regenerated, ``queue_rows`` queues their rows for the reconcile).
    A column of ``dst``'s primary key that changed cannot follow: refused."""
    key_cols = primary_key(session, dst)
    diff = column_drift(session, src, dst)
    blocked = [c for c in diff["extra"] if c in key_cols] + [c for c, _w, _n in diff["retyped"] if c in key_cols] + \
        [c for c in diff["nullable"] if c in key_cols]
    if blocked:
        raise PartitioningError(
            "%s: column(s) %s of the key of %s (%s) were dropped, renamed, retyped or made nullable on %s: the "
            "destination cannot follow. Undo that change on %s (e.g. ALTER TABLE %s ALTER COLUMN … SET NOT NULL), "
            "or roll back (rollback.yml) and prepare again."
            % (qualified(*src), ", ".join(sorted(set(blocked))), qualified(*dst), ", ".join(key_cols),
               qualified(*src), qualified(*src), qualified(*src)))
    done = []
    for col in diff["extra"]:
        session.execute(sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(sql.Identifier(*dst), sql.Identifier(col)))
        done.append("column %s dropped from %s" % (col, qualified(*dst)))
    for col in diff["nullable"]:
        session.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL").format(
            sql.Identifier(*dst), sql.Identifier(col)))
        done.append("NOT NULL of %s.%s dropped" % (qualified(*dst), col))
    for col, _was, now in diff["retyped"]:
        session.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING {}::{}").format(
            sql.Identifier(*dst), sql.Identifier(col), sql.SQL(now), sql.Identifier(col), sql.SQL(now)))
        done.append("column %s.%s converted to %s" % (qualified(*dst), col, now))
    if add_missing:
        types = _columns(session, src)
        for col in diff["missing"]:
            session.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                sql.Identifier(*dst), sql.Identifier(col), sql.SQL(types[col]["type"])))
            done.append("column %s.%s added" % (qualified(*dst), col))
    return done, [c for c, _w, _n in diff["retyped"]] + diff["missing"]


def queue_rows(session, src, dst, columns, key_cols, pk_cols, state_schema, table_name):
    """Queue for the reconcile every row of both tables whose ``columns`` differ: the values the
    sync could not carry while the two disagreed (rows ``dst`` lacks are the backfill's, or the
    pending keys'). One join of both tables, no lock beyond reading. ``key_cols``: how rows match
    (``dst``'s primary key); ``pk_cols``: how keys are logged (the original's primary key)."""
    if not columns:
        return []
    keys = sql.SQL(" AND ").join(sql.SQL("d.{0} = s.{0}").format(sql.Identifier(c)) for c in key_cols)
    differ = sql.SQL(" OR ").join(sql.SQL("d.{0} IS DISTINCT FROM s.{0}").format(sql.Identifier(c)) for c in columns)
    pk = sql.SQL(", ").join(sql.SQL("{}, s.{}").format(sql.Literal(c), sql.Identifier(c)) for c in pk_cols)
    n = session.execute(sql.SQL(
        "INSERT INTO {} (table_name, pk, reason) SELECT {}, jsonb_build_object({}), 'ddl' FROM {} s "
        "JOIN {} d ON {} WHERE {}").format(
        sql.Identifier(state_schema, "pending_keys"), sql.Literal(table_name), pk, sql.Identifier(*src),
        sql.Identifier(*dst), keys, differ))
    counted = "" if n is None else " (%s)" % n
    return ["rows whose %s differ queued for the reconcile%s" % (", ".join(columns), counted)]
