"""psycopg2 ``sql`` compositions printed without a server, for tests of pure statement builders.

psycopg2 prints an Identifier only through a live connection (libpq's PQescapeIdentifier),
so this renders a composition from its parts with the same rules: SQL text verbatim,
identifiers always double-quoted with inner quotes doubled (what PQescapeIdentifier returns),
strings as standard-conforming literals (quotes doubled, backslashes left alone: what
PQescapeStringConn returns with standard_conforming_strings on, the default since
PostgreSQL 9.1), other values through psycopg2's own adapters. An integration test compares it
with psycopg2's output on a real server.
"""
from psycopg2 import sql
from psycopg2.extensions import adapt


def render(composable):
    if isinstance(composable, sql.Composed):
        return "".join(render(part) for part in composable.seq)
    if isinstance(composable, sql.SQL):
        return composable.string
    if isinstance(composable, sql.Identifier):
        return ".".join('"%s"' % s.replace('"', '""') for s in composable.strings)
    if isinstance(composable, sql.Literal):
        value = composable.wrapped
        if isinstance(value, str):
            return "'%s'" % value.replace("'", "''")
        return adapt(value).getquoted().decode("ascii")
    raise TypeError("cannot render %r without a server" % (composable,))
