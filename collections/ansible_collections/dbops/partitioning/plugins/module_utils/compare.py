# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Are two relations equal? One comparison, in one snapshot (docs/design.md, "Verification").

The sync triggers write both tables in the application's own transaction, so a single
``REPEATABLE READ`` snapshot shows them equal even while writes continue. A comparison reads
the count and the checksum (``sum`` of a 64-bit hash of each row, over the given columns in
order) of the selected rows on both sides in one snapshot; when they differ it can list the
differing keys (``EXCEPT ALL`` of the rows' text forms both ways, capped) and how many of them
are pending reconciliation in that same snapshot.

The row hash is ``hash_record_extended`` over the columns: a column whose type's own hash
tells values apart exactly (integers, booleans, dates and times, uuid, bytea, and text types
under the byte-wise collation "C") is hashed as it is; any other column (numeric, floats,
intervals, json, arrays, user types: types whose equality is looser than identity) through
its text form, as PostgreSQL prints it. Hashing ``timestamptz`` or ``bigint`` values without
printing them makes a comparison about three times cheaper than hashing the text of the row.

Used by the phase 2 verification (per batch range and per partition), by the switchover's
final check, by rollback and by cleanup.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from dataclasses import dataclass, field

from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.keys import canonical_key, key_json

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None

MAX_DIFFERENCES = 100
TRUE = "true"
# Types hashed as they are (their equality is identity); text types under COLLATE "C".
EXACT_HASH_TYPES = frozenset(("int2", "int4", "int8", "bool", "date", "timestamp", "timestamptz", "time", "uuid",
                              "bytea", "oid", "text", "varchar", "bpchar"))
BYTEWISE_TYPES = frozenset(("text", "varchar", "bpchar"))

COLUMN_TYPES_SQL = """
SELECT a.attname AS name, b.typname AS type, b.typnamespace = 'pg_catalog'::regnamespace AND b.typtype = 'b' AS builtin
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
JOIN pg_catalog.pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
"""


@dataclass
class Comparison:
    rows_a: int
    rows_b: int
    checksum_a: str
    checksum_b: str
    pending_keys: int = 0           # keys of the table pending reconciliation in the snapshot
    differences: list = field(default_factory=list)   # [{key, side}] when listed
    pending_differences: int = 0    # how many of ``differences`` are pending keys

    @property
    def equal(self):
        return self.rows_a == self.rows_b and self.checksum_a == self.checksum_b

    def as_dict(self, a=None, b=None):
        out = dict(equal=self.equal, rows_a=self.rows_a, rows_b=self.rows_b, checksum_a=self.checksum_a,
                   checksum_b=self.checksum_b, pending_keys=self.pending_keys)
        if a is not None and b is not None:
            out["tables"] = [qualified(*a), qualified(*b)]
        return out


def row_text(columns, alias):
    """``ROW(alias.a, ...)::text``: what the checksum hashes."""
    return sql.SQL("ROW({})::text").format(sql.SQL(", ").join(
        sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c)) for c in columns))


def row_hash(session, rel, columns, alias):
    """``hash_record_extended(ROW(...), 0)`` of ``columns`` of ``rel`` (a (schema, name)) on ``alias``."""
    types = dict((r["name"], r) for r in session.query(COLUMN_TYPES_SQL, (sql.Identifier(*rel).as_string(session.conn),)))
    parts = []
    for c in columns:
        t = types.get(c)
        ref = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c))
        if t is None or not t["builtin"] or t["type"] not in EXACT_HASH_TYPES:
            parts.append(sql.SQL("{}::text").format(ref))
        elif t["type"] in BYTEWISE_TYPES:
            parts.append(sql.SQL('{} COLLATE "C"').format(ref))
        else:
            parts.append(ref)
    return sql.SQL("pg_catalog.hash_record_extended(ROW({}), 0)").format(sql.SQL(", ").join(parts))


def _condition(where):
    if where is None:
        return sql.SQL(TRUE)
    return sql.SQL(where) if isinstance(where, str) else where


def _not_pending(pending, key_columns):
    state_schema, table_name = pending
    return sql.SQL("NOT EXISTS (SELECT 1 FROM {} AS p WHERE p.table_name = {} AND p.pk = {})").format(
        sql.Identifier(state_schema, "pending_keys"), sql.Literal(table_name), key_json(key_columns, "o"))


def _stats(session, rel, row_hash_o, where, params):
    return session.query(sql.SQL(
        "SELECT count(*) AS n, coalesce(sum({}), 0)::text AS checksum "
        "FROM {} AS o WHERE {}").format(row_hash_o, rel, where), params)[0]


def _differences(session, a, where_a, b, where_b, columns, key_columns, params, limit):
    """Keys whose rows differ, with the side(s) they are on ('original', 'twin' or both)."""
    def one_side(x, where_x, y, where_y):
        return sql.SQL("SELECT k FROM (SELECT {key} AS k, {row} AS r FROM {x} AS o WHERE {wx} "
                       "EXCEPT ALL SELECT {key}, {row} FROM {y} AS o WHERE {wy}) AS d LIMIT %(cap)s").format(
            key=key_json(key_columns, "o"), row=row_text(columns, "o"), x=x, wx=where_x, y=y, wy=where_y)
    p = dict(params, cap=limit)
    only_a = [r["k"] for r in session.query(one_side(a, where_a, b, where_b), p)]
    only_b = [r["k"] for r in session.query(one_side(b, where_b, a, where_a), p)]
    out = {}
    for k in only_a:
        out.setdefault(canonical_key(k), dict(key=k, side="original"))
    for k in only_b:
        c = canonical_key(k)
        if c in out:
            out[c]["side"] = "both (rows differ)"
        else:
            out[c] = dict(key=k, side="twin")
    return list(out.values())[:limit]


def _pending_set(session, pending):
    state_schema, table_name = pending
    return set(canonical_key(r["pk"]) for r in session.query(sql.SQL(
        "SELECT pk FROM {} WHERE table_name = %s").format(sql.Identifier(state_schema, "pending_keys")),
        (table_name,)))


def compare_tables(session, a, b, columns, key_columns, where_a=None, where_b=None, params=None,
                   pending=None, skip_pending=False, list_differences=0):
    """Compare relations ``a`` and ``b`` (each ``(schema, name)``) in one ``REPEATABLE READ, READ
    ONLY`` snapshot; returns a ``Comparison``. Column types are read from ``a``.

    ``columns`` are hashed in order on both sides; ``key_columns`` name a row's key;
    ``where_a``/``where_b`` select the rows (SQL on alias ``o``, ``params`` for their
    placeholders). ``pending = (state_schema, table_name)`` names the table's pending keys:
    counted in the snapshot, left out of both sides when ``skip_pending``, and, when the sides
    differ and ``list_differences`` > 0, that many differing keys are listed with how many of
    them are pending.
    """
    rel_a, rel_b = sql.Identifier(*a), sql.Identifier(*b)
    hashed = row_hash(session, a, columns, "o")
    where_a, where_b, params = _condition(where_a), _condition(where_b), params or {}
    if pending is not None and not session.scalar("SELECT to_regclass(%s) IS NOT NULL", (
            sql.Identifier(pending[0], "pending_keys").as_string(session.conn),)):
        pending = None
    if pending is not None and skip_pending:
        where_a = sql.SQL("({}) AND {}").format(where_a, _not_pending(pending, key_columns))
        where_b = sql.SQL("({}) AND {}").format(where_b, _not_pending(pending, key_columns))
    with session.transaction():
        session.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        sa = _stats(session, rel_a, hashed, where_a, params)
        sb = _stats(session, rel_b, hashed, where_b, params)
        res = Comparison(rows_a=int(sa["n"]), rows_b=int(sb["n"]), checksum_a=sa["checksum"],
                         checksum_b=sb["checksum"])
        if pending is not None:
            res.pending_keys = int(session.scalar(sql.SQL("SELECT count(*) FROM {} WHERE table_name = %s").format(
                sql.Identifier(pending[0], "pending_keys")), (pending[1],)))
        if not res.equal and list_differences:
            res.differences = _differences(session, rel_a, where_a, rel_b, where_b, columns, key_columns, params,
                                           list_differences)
            if pending is not None and res.pending_keys:
                waiting = _pending_set(session, pending)
                res.pending_differences = sum(1 for d in res.differences if canonical_key(d["key"]) in waiting)
    return res


def compare_for_swap(session, state_schema, table_name, a, b, columns, key_columns):
    """The check before a swap (switchover, rollback) or a drop (cleanup): ``a`` and ``b`` in one
    snapshot with the keys pending reconciliation left out of both sides (the swap makes them equal
    under its lock). Returns dict(equal, rows_a, rows_b, checksum_a, checksum_b, pending_keys, tables)."""
    return compare_tables(session, a, b, columns, key_columns, pending=(state_schema, table_name),
                          skip_pending=True).as_dict(a, b)
