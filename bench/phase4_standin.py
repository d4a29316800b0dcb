"""STAND-IN for phase 4 until it lands: the two things the report benchmark needs from it.

* ``build_spec_indexes``: the table spec's ``indexes:`` built the way ``phase4_optimize.yml``
  builds them (issue 8): the index ``ON ONLY`` the parent, each partition's index
  ``CREATE INDEX CONCURRENTLY``, then ``ALTER INDEX … ATTACH PARTITION``. It drives phase 1's
  own online build (``prepare/twin.py _build_index_online``, HP16), so the statements are the
  product's, not a copy.
* ``plain_index_statement``: the same index as a plain ``CREATE INDEX`` (the benchmark's control).
* ``drop_expired_partitions``: retention with ``retention_action: drop`` as ``maintenance.yml``
  does it: each expired partition detached and dropped, one statement per short transaction
  under a lock timeout, the parent locked before the child. With a default partition
  PostgreSQL refuses ``DETACH … CONCURRENTLY`` (HP15), so the detach is the plain one: a
  brief ACCESS EXCLUSIVE on the parent.

When phase 4's module code is on main, these functions are replaced by calls to it (and
this file is deleted); ``reports.py`` names which code built the indexes and removed the
partitions in its results (``phase4_by``).
"""
from psycopg2 import sql

from bench.backfill import module_session

BY = "bench/phase4_standin.py (phase 4 not on main yet): prepare/twin.py's online index build; DETACH + DROP"
LOCK_TIMEOUT_MS = 200
RETRIES = 30


def _index_model(conn, table, entry):
    """A catalog ``Index`` for one ``indexes:`` entry of the spec (the agreed format:
    ``{name, columns: [col or expression], include: [cols], using, where, with: {param: value}}``)."""
    from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import Index
    from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import derived_name
    columns = list(entry["columns"])
    specs = [sql.Identifier(c).as_string(conn) if c.isidentifier() else "(%s)" % c for c in columns]
    name = entry.get("name") or derived_name(
        "%s_%s" % (table[1], "_".join(c if c.isidentifier() else "expr" for c in columns)), "_p4_idx")
    return Index(name=name, oid=0, definition="", is_unique=False, is_primary=False, constraint_name=None,
                 constraint_type=None, method=entry.get("using", "btree"),
                 key_columns=[c if c.isidentifier() else None for c in columns], key_definitions=columns,
                 include_columns=list(entry.get("include") or []), predicate=entry.get("where"),
                 reloptions=["%s=%s" % kv for kv in sorted((entry.get("with") or {}).items())], tablespace=None,
                 is_valid=True, comment=None, key_specs=specs)


def build_spec_indexes(srv, dbname, table, indexes, key):
    """Build every entry of ``indexes`` on the partitioned ``table``; returns their names."""
    from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.twin import (
        _Existing, _build_index_online)
    sess = module_session(srv, dbname)
    try:
        names = []
        for entry in indexes:
            ix = _index_model(sess.conn, table, entry)
            _build_index_online(sess, _Existing(sess, table), table, ix.name, ix, key,
                                lambda stmt, _what: sess.execute(stmt))
            names.append(ix.name)
        return names
    finally:
        sess.close()


def plain_index_statement(conn, table, entry, suffix):
    """``CREATE INDEX`` of one ``indexes:`` entry on a plain ``table`` (the benchmark's control:
    the same index without partitioning), named like the entry plus ``suffix``."""
    from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.twin import _index_sql
    ix = _index_model(conn, table, entry)
    return _index_sql(table, ix.name + suffix, ix, None), ix.name + suffix


def drop_expired_partitions(sess, table, partitions):
    """Detach then drop each of ``partitions`` (names in ``table``'s schema), through ``sess``
    (a module_utils Session)."""
    from ansible_collections.dbops.partitioning.plugins.module_utils.locking import run_with_lock_retry
    for name in partitions:
        part = (table[0], name)
        run_with_lock_retry(sess, lambda s: s.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(
            sql.Identifier(*table), sql.Identifier(*part))), LOCK_TIMEOUT_MS, RETRIES, relations=[table],
            what="detaching %s" % name)
        run_with_lock_retry(sess, lambda s: s.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(*part))),
                            LOCK_TIMEOUT_MS, RETRIES, relations=[part], what="dropping %s" % name)
