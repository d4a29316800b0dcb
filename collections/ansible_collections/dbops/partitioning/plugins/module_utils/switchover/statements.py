# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The statements of the swap transaction, built from the captured pair alone (no server).

``swap_statements(pair, names, prebuilt, state_schema, table_name, lock_timeout_ms)`` returns
them in order; ``transaction.run_swap`` sends them in one round trip. In order:

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
9. Publication membership moved, with its row filter and column list (HP12).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from collections import namedtuple

from ansible_collections.dbops.partitioning.plugins.module_utils import sync
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import missing_grants, reloption_sql
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import derived_name
from ansible_collections.dbops.partitioning.plugins.module_utils.keys import key_json

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None

PREBUILT_SUFFIX = "_swap"

# What the active is called after the swap, and the suffixes of the index and constraint names
# each table carries while it is not the application's (forward: revenues_old with '_old',
# the twin's '_p'; rollback the other way round).
SwapNames = namedtuple("SwapNames", "active_new active_index_suffix standby_index_suffix")

_ENABLE = {"O": "ENABLE", "D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}


def _kind(view):
    return sql.SQL("MATERIALIZED VIEW" if view.kind == "m" else "VIEW")


def create_view_sql(view, definition, name=None, with_data=True):
    """CREATE [MATERIALIZED] VIEW of ``view`` (a catalog.DependentView) with its options, from
    ``definition`` (pg_get_viewdef text: PostgreSQL's own deparse), named ``name`` or its own."""
    parts = [sql.SQL("CREATE {} {}").format(_kind(view), sql.Identifier(view.schema, name or view.name))]
    if view.reloptions:
        parts.append(sql.SQL(" WITH ({})").format(sql.SQL(", ").join(reloption_sql(o) for o in view.reloptions)))
    if view.kind == "m" and view.tablespace:
        parts.append(sql.SQL(" TABLESPACE {}").format(sql.Identifier(view.tablespace)))
    parts.append(sql.SQL(" AS ") + sql.SQL(definition.rstrip().rstrip(";")))
    if view.kind == "m":
        parts.append(sql.SQL(" WITH DATA" if with_data else " WITH NO DATA"))
    return sql.Composed(parts)


def _rename_index(table, index, new):
    """Rename an index, through its constraint when it backs one (the constraint keeps the name)."""
    if index.constraint_name:
        return sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
            sql.Identifier(*table), sql.Identifier(index.constraint_name), sql.Identifier(new))
    return sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(table[0], index.name), sql.Identifier(new))


def _index_renames(pair, names, A_now, S_now):
    """Step 5 before the tables: the active's index (and constraint) names get its suffix; the
    standby's counterparts, found by the suffix they carry (or as the primary key), get the names
    the application knows. Outbound foreign keys likewise."""
    out = []
    standby_by_name = dict((i.name, i) for i in pair.standby.indexes)
    standby_pk = next((i for i in pair.standby.indexes if i.is_primary), None)
    renames, used = [], set()
    for ix in pair.active.indexes:
        target = standby_pk if ix.is_primary else None
        if target is None:
            target = standby_by_name.get(derived_name(ix.name, names.standby_index_suffix))
        if target is not None and target.name not in used:
            used.add(target.name)
            renames.append((target, ix.name))
    for ix in pair.active.indexes:
        out.append(_rename_index(A_now, ix, derived_name(ix.name, names.active_index_suffix)))
    out.extend(_rename_index(S_now, target, name) for target, name in renames if target.name != name)
    standby_fks = set(fk.name for fk in pair.standby.foreign_keys)
    for fk in pair.active.foreign_keys:
        theirs = derived_name(fk.name, names.standby_index_suffix)
        if theirs in standby_fks and fk.name not in standby_fks:
            out.append(sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                sql.Identifier(*A_now), sql.Identifier(fk.name),
                sql.Identifier(derived_name(fk.name, names.active_index_suffix))))
            out.append(sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                sql.Identifier(*S_now), sql.Identifier(theirs), sql.Identifier(fk.name)))
    return out


def _table_properties(pair, A_end, S_end):
    """Step 6: owner, grants, comment, RLS; sequences and identity columns."""
    a, s = pair.active, pair.standby
    out = []
    if s.owner != a.owner:
        out.append(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(*S_end), sql.Identifier(a.owner)))
    standby_grants = [g for g in s.grants if g.grantee != s.owner]
    out.extend(stmt for _grantee, _privileges, stmt in missing_grants(a.grants, S_end, a.owner, standby_grants))
    if (s.comment or None) != (a.comment or None):
        out.append(sql.SQL("COMMENT ON TABLE {} IS {}").format(sql.Identifier(*S_end), sql.Literal(a.comment)))
    if a.rls_enabled:
        out.append(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(sql.Identifier(*S_end)))
        out.append(sql.SQL("ALTER TABLE {} DISABLE ROW LEVEL SECURITY").format(sql.Identifier(*A_end)))
    if a.rls_forced:
        out.append(sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(sql.Identifier(*S_end)))
        out.append(sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(sql.Identifier(*A_end)))
    for seq in a.owned_sequences:
        if not seq.identity:
            out.append(sql.SQL("ALTER SEQUENCE {} OWNED BY {}").format(
                sql.Identifier(seq.schema, seq.name), sql.Identifier(S_end[0], S_end[1], seq.column)))
    for col in a.columns:
        if not col.identity:
            continue
        kind = sql.SQL("ALWAYS" if col.identity == "a" else "BY DEFAULT")
        mine = s.column(col.name)
        if mine is None or not mine.identity:
            out.append(sql.SQL("ALTER TABLE {} ALTER COLUMN {} ADD GENERATED {} AS IDENTITY").format(
                sql.Identifier(*S_end), sql.Identifier(col.name), kind))
        elif mine.identity != col.identity:
            out.append(sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET GENERATED {}").format(
                sql.Identifier(*S_end), sql.Identifier(col.name), kind))
        out.append(identity_restart(pair, A_end, S_end, col.name))
    return out


def _triggers(pair, A_end, S_end):
    """Step 7: the application's triggers on the standby as they were on the active; off on the active."""
    out = []
    standby_has = set(t.name for t in sync.application_triggers(pair.standby.triggers))
    for t in sync.application_triggers(pair.active.triggers):
        if t.name not in standby_has:
            # pg_get_triggerdef names the table schema-qualified as it was: after the renames
            # that name is the standby's
            out.append(sql.SQL(t.definition))
        out.append(sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
            sql.Identifier(*S_end), sql.SQL(_ENABLE.get(t.enabled, "ENABLE")), sql.Identifier(t.name)))
        out.append(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(sql.Identifier(*A_end), sql.Identifier(t.name)))
    return out


def _recreate_view(v, prebuilt):
    """Step 8 for one view: created again (or the pre-built one renamed into place), with its
    indexes, owner, grants, comments and INSTEAD OF triggers."""
    out = []
    target = sql.Identifier(v.schema, v.name)
    if v.name in prebuilt:
        out.append(sql.SQL("ALTER MATERIALIZED VIEW {} RENAME TO {}").format(
            sql.Identifier(v.schema, prebuilt[v.name]), sql.Identifier(v.name)))
        for ix in v.indexes:
            out.append(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                sql.Identifier(v.schema, derived_name(ix.name, PREBUILT_SUFFIX)), sql.Identifier(ix.name)))
    else:
        out.append(create_view_sql(v, v.definition))
        out.extend(sql.SQL(ix.definition) for ix in v.indexes)
    out.append(sql.SQL("ALTER {} {} OWNER TO {}").format(_kind(v), target, sql.Identifier(v.owner)))
    out.extend(stmt for _grantee, _privileges, stmt in missing_grants(v.grants, (v.schema, v.name), v.owner))
    if v.comment is not None:
        out.append(sql.SQL("COMMENT ON {} {} IS {}").format(_kind(v), target, sql.Literal(v.comment)))
    for column, comment in v.column_comments:
        out.append(sql.SQL("COMMENT ON COLUMN {} IS {}").format(
            sql.Identifier(v.schema, v.name, column), sql.Literal(comment)))
    if v.name not in prebuilt:
        for t in v.triggers:
            out.append(sql.SQL(t.definition))
            if t.enabled != "O":
                out.append(sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
                    target, sql.SQL(_ENABLE.get(t.enabled, "ENABLE")), sql.Identifier(t.name)))
    return out


def _publications(pair, A_end, S_end):
    """Step 9: membership by name moves to the standby, with its row filter and column list."""
    out = []
    for p in pair.active.publications:
        if not p.explicit:
            continue            # FOR ALL TABLES / TABLES IN SCHEMA publish the new table by themselves
        out.append(sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(sql.Identifier(p.name), sql.Identifier(*A_end)))
        stmt = sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(sql.Identifier(p.name), sql.Identifier(*S_end))
        if p.columns:
            stmt += sql.SQL(" ({})").format(sql.SQL(", ").join(sql.Identifier(c) for c in p.columns))
        if p.row_filter:
            stmt += sql.SQL(" WHERE ({})").format(sql.SQL(p.row_filter))   # pg_get_expr: PostgreSQL's deparse
        out.append(stmt)
    return out


def swap_statements(pair, names, prebuilt, state_schema, table_name, lock_timeout_ms):
    """The statements of the swap, in order (see the top of this file). ``names``: what the active
    becomes; ``prebuilt``: {materialized view: its pre-built twin} (matviews.prebuild)."""
    schema, active, standby = pair.schema, pair.active.name, pair.standby.name
    A_now, S_now = (schema, active), (schema, standby)
    A_end, S_end = (schema, names.active_new), (schema, active)   # after the renames
    outermost_first = sorted(pair.active.views, key=lambda v: (-v.depth, v.name))

    # 1. locks: outermost views first, then the tables (a reader's order: view, then table)
    # (LOCK TABLE refuses materialized views: their DROP takes its lock, under the same timeout)
    lockable = [(v.schema, v.name) for v in outermost_first if v.kind == "v"] + [A_now, S_now]
    out = [sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal("%dms" % int(lock_timeout_ms))),
           sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
               sql.SQL(", ").join(sql.Identifier(*r) for r in lockable)),
           # when the locks were granted: swap_lock_ms is measured from here (server clock)
           sql.SQL("SELECT set_config('dbops.lock_at', clock_timestamp()::text, true)")]
    # 2. pending keys, reconciled active -> standby (nobody writes under the lock)
    out += reconcile_statements(pair, state_schema, table_name, A_now, S_now)
    # 3. the sync triggers on the active, and their functions
    out += sync.drop_statements(pair.sync_triggers)
    # 4. dependent views, outermost first
    out += [sql.SQL("DROP {} {}").format(_kind(v), sql.Identifier(v.schema, v.name)) for v in outermost_first]
    # 5. index and constraint names, then the tables
    out += _index_renames(pair, names, A_now, S_now)
    out += [sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(*A_now), sql.Identifier(names.active_new)),
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(*S_now), sql.Identifier(active))]
    # 6. owner, grants, comment, RLS, sequences
    out += _table_properties(pair, A_end, S_end)
    # 7. the application's triggers
    out += _triggers(pair, A_end, S_end)
    # 8. views re-created, innermost first
    for v in sorted(pair.active.views, key=lambda v: (v.depth, v.name)):
        out += _recreate_view(v, prebuilt)
    # 9. publications
    out += _publications(pair, A_end, S_end)
    return out


def reconcile_statements(pair, state_schema, table_name, src, dst):
    """Pending keys of ``table_name``: delete ``dst``'s rows of each key, copy ``src``'s (under the lock).

    Under ACCESS EXCLUSIVE nobody writes the table, and every pending entry was committed by a
    transaction that held a lock on it: the three statements see the same set of keys. Keys are
    logged by the original's primary key, the shorter of the two (the partitioned table's adds
    the partition key).
    """
    pk_cols = min(pair.active.pk_columns, pair.standby.pk_columns, key=len)
    # the columns both store (a column the application added to one table alone is not the other's)
    cols = [c for c in pair.active.stored_columns if c in pair.standby.stored_columns]
    pending = sql.SQL("(SELECT pk FROM {} WHERE table_name = {})").format(
        sql.Identifier(state_schema, "pending_keys"), sql.Literal(table_name))
    return [
        sql.SQL("SELECT set_config('dbops.reconciled', (SELECT count(DISTINCT pk) FROM {} WHERE table_name = {})::text, "
                "true)").format(sql.Identifier(state_schema, "pending_keys"), sql.Literal(table_name)),
        sql.SQL("DELETE FROM {} AS d WHERE {} IN {}").format(sql.Identifier(*dst), key_json(pk_cols, "d"), pending),
        sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} AS s WHERE {} IN {}").format(
            sql.Identifier(*dst), sql.SQL(", ").join(sql.Identifier(c) for c in cols),
            sql.SQL(", ").join(sql.Identifier("s", c) for c in cols), sql.Identifier(*src), key_json(pk_cols, "s"), pending),
        sql.SQL("DELETE FROM {} WHERE table_name = {}").format(sql.Identifier(state_schema, "pending_keys"),
                                                               sql.Literal(table_name)),
    ]


def identity_restart(pair, src, dst, column):
    """The standby's identity sequence continues above every value the active used: its maximum
    and its own identity sequence's last value (HP10). Runs under the lock, after the renames."""
    seq = next((q for q in pair.active.owned_sequences if q.identity and q.column == column), None)
    last = sql.SQL("NULL::bigint")
    if seq:
        last = sql.SQL("(SELECT last_value FROM pg_sequences WHERE schemaname = {} AND sequencename = {})").format(
            sql.Literal(seq.schema), sql.Literal(seq.name))
    return sql.SQL("SELECT setval(pg_get_serial_sequence({}, {}), greatest((SELECT max({}) FROM {}), {}, 1))").format(
        sql.Literal(_regclass_text(dst)), sql.Literal(column), sql.Identifier(column), sql.Identifier(*src), last)


def _regclass_text(rel):
    """``schema.name`` quoted the way regclass input expects (double quotes, doubled inside)."""
    return ".".join('"%s"' % part.replace('"', '""') for part in rel)
