# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Primary keys in SQL: the one place that writes them.

A key travels between PostgreSQL and Python (checkpoints, range bounds, pending keys) as a
jsonb object ``{pk column: value}``; in SQL it is compared as a row of the key's columns,
so keyset order works for composite keys and any key type and uses the primary key index.
Every expression that names a key — the key as jsonb, the key as a row, a jsonb bound read
back as a row of the key's own types, a range ``(lo, hi]``, keyset order, the match of two
rows' keys, a jsonb list of keys as a relation — is built here, for the Python callers and,
as Jinja globals of the same names (``sql_templates``), for the SQL templates.

``alias`` is the name of a row source (a ``str``, quoted as an identifier) or an already
composed expression such as ``sql.SQL('NEW')``. Nothing here runs SQL.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None


def _source(alias):
    return sql.Identifier(alias) if isinstance(alias, str) else alias


def _param(placeholder):
    return sql.Placeholder(placeholder) if isinstance(placeholder, str) else placeholder


def key_columns(columns, alias):
    """``alias.a, alias.b``."""
    return sql.SQL(", ").join(sql.SQL("{}.{}").format(_source(alias), sql.Identifier(c)) for c in columns)


def key_json(columns, alias):
    """``pg_catalog.jsonb_build_object('a', alias.a, ...)``: the key as the state stores it."""
    parts = []
    for c in columns:
        parts += [sql.Literal(c), sql.SQL("{}.{}").format(_source(alias), sql.Identifier(c))]
    return sql.SQL("pg_catalog.jsonb_build_object({})").format(sql.SQL(", ").join(parts))


def key_row(columns, alias):
    """``ROW(alias.a, alias.b)``."""
    return sql.SQL("ROW({})").format(key_columns(columns, alias))


def key_bound(columns, rel, placeholder):
    """The jsonb key in ``placeholder`` as a row of the key's own types.

    ``jsonb_populate_record(NULL::rel, key)`` casts every value to its column's type
    without naming a type in SQL text; the expression is stable, so a comparison with it
    can drive an index scan (keyset order)."""
    return sql.SQL("ROW({})").format(sql.SQL(", ").join(
        sql.SQL("(pg_catalog.jsonb_populate_record(NULL::{}, {}::jsonb)).{}").format(
            sql.Identifier(*rel), _param(placeholder), sql.Identifier(c)) for c in columns))


def key_in_range(columns, rel, alias, has_lower, lo="lo", hi="hi", has_upper=True):
    """``key > lo AND key <= hi`` on ``alias`` (jsonb placeholders ``lo``, ``hi``); without a
    lower (upper) bound that side is left out."""
    conds = []
    if has_lower:
        conds.append(sql.SQL("{} > {}").format(key_row(columns, alias), key_bound(columns, rel, lo)))
    if has_upper:
        conds.append(sql.SQL("{} <= {}").format(key_row(columns, alias), key_bound(columns, rel, hi)))
    return sql.SQL(" AND ").join(conds) if conds else sql.SQL("true")


def key_order(columns, alias, desc=False):
    """``alias.a, alias.b`` (each ``DESC`` when ``desc``): keyset order."""
    return sql.SQL(", ").join(
        sql.SQL("{}.{}{}").format(_source(alias), sql.Identifier(c), sql.SQL(" DESC" if desc else ""))
        for c in columns)


def key_match(columns, left, right):
    """``left.a = right.a AND left.b = right.b``."""
    return sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}.{}").format(_source(left), sql.Identifier(c), _source(right), sql.Identifier(c))
        for c in columns)


def key_recordset(rel, placeholder):
    """A jsonb array of keys in ``placeholder`` as a relation with ``rel``'s column types."""
    return sql.SQL("pg_catalog.jsonb_populate_recordset(NULL::{}, {}::jsonb)").format(
        sql.Identifier(*rel), _param(placeholder))


def canonical_key(key):
    """A key (its jsonb object, decoded) as text that is equal for equal keys: set membership in Python."""
    return json.dumps(key, sort_keys=True, default=str)


# What the SQL templates may call (sql_templates registers them as Jinja globals).
TEMPLATE_GLOBALS = dict((f.__name__, f) for f in (
    key_columns, key_json, key_row, key_bound, key_in_range, key_order, key_match, key_recordset))
