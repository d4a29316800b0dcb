# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Publications of a table being partitioned: what would stop the swap, the application's writes
or a subscriber, found in phase 1 before anything changes and again before the swap (HP12, HP19;
docs/design.md, "Publications").

* A membership by name with a **row filter or a column list** is allowed on a partitioned table
  only with ``publish_via_partition_root = true``: the swap's ``ALTER PUBLICATION … ADD TABLE``
  would fail after the whole backfill. Refused, with the ``ALTER PUBLICATION`` that fixes it.
* A **column list** must cover the replica identity, else PostgreSQL refuses every UPDATE and
  DELETE of a table published for them; the partitioned table's identity is the primary key
  with the partition key (HP6). A list without the key would make the application's updates and
  deletes fail from the swap on: refused, with the statements that add the column.
* ``publish_via_partition_root = false`` (membership by name): from the swap on the changes are
  published under the partitions' names; ``FOR ALL TABLES`` or ``TABLES IN SCHEMA`` of the
  table's or the state schema: the twin, ``<table>_old`` after the swap and the state schema's
  tables are published too. A native subscriber stops at the first change of a table it lacks
  (``logical replication target relation … does not exist``). Refused while a logical slot of
  the ``pgoutput`` plugin exists in the database (somebody subscribes), unless the operator says
  the subscribers are ready for it (``subscribers_ready``); a warning otherwise.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import display, qualified

READY_KNOB = "subscribers_ready"

# Somebody subscribes to this database's publications: a slot of the plugin publications serve.
SUBSCRIBED_SQL = """
SELECT count(*) FROM pg_catalog.pg_replication_slots
 WHERE slot_type = 'logical' AND plugin = 'pgoutput' AND database = pg_catalog.current_database()
"""

# Publications FOR TABLES IN SCHEMA <schema> (PostgreSQL 15+).
SCHEMA_PUBLICATIONS_SQL = """
SELECT p.pubname AS name FROM pg_catalog.pg_publication_namespace pn
  JOIN pg_catalog.pg_publication p ON p.oid = pn.pnpubid
  JOIN pg_catalog.pg_namespace n ON n.oid = pn.pnnspid
 WHERE n.nspname = %(schema)s ORDER BY 1
"""


def _columns(names):
    return "(%s)" % ", ".join(display(c) for c in names)


def membership_problems(label, table, publications, identity):
    """Memberships by name that a partitioned ``table`` ((schema, name)) cannot keep: a row filter
    or a column list without ``publish_via_partition_root``, a column list that does not cover
    ``identity`` (the partitioned table's replica identity columns) while UPDATE or DELETE is
    published. One sentence per problem, with the fix."""
    out = []
    for pub in publications:
        if not pub.explicit:
            continue
        name = display(pub.name)
        kinds = ([("row filter WHERE %s" % pub.row_filter)] if pub.row_filter else []) + (
            ["column list %s" % _columns(pub.columns)] if pub.columns else [])
        if kinds and not pub.via_root:
            out.append("%s: publication %s publishes it with a %s, which PostgreSQL allows on a partitioned table "
                       "only with publish_via_partition_root = true: the switchover would fail (HP19). Run ALTER "
                       "PUBLICATION %s SET (publish_via_partition_root = true) (plain tables are published as before; "
                       "partitioned tables in %s are then published under their own name, as this one will be)."
                       % (label, name, " and a ".join(kinds), name, name))
        missing = [c for c in identity if pub.columns and c not in pub.columns]
        changes = [a for a in ("update", "delete") if a in pub.actions]
        if missing and changes:
            wanted = list(pub.columns) + missing
            verbs = " and ".join(a.upper() for a in changes)
            where = " WHERE %s" % pub.row_filter if pub.row_filter else ""
            out.append("%s: publication %s publishes the column list %s and every %s; on the partitioned table the "
                       "replica identity is %s, which the list does not cover, so from the switchover on every %s of "
                       "the table would fail (HP19). Add %s to the list (and to the subscribers' table if it lacks "
                       "it), in one transaction: BEGIN; ALTER PUBLICATION %s DROP TABLE %s; ALTER PUBLICATION %s ADD "
                       "TABLE %s %s%s; COMMIT;"
                       % (label, name, _columns(pub.columns), verbs, _columns(identity), verbs, ", ".join(missing),
                          name, qualified(*table), name, qualified(*table), _columns(wanted), where))
    return out


def subscriber_problems(label, publications, twin, old, state_schema, state_publications, subscribed):
    """What subscribers would receive and lack: changes under the partitions' names (by name, without
    ``publish_via_partition_root``) and the tables the migration creates (FOR ALL TABLES, TABLES IN
    SCHEMA). One sentence each, with the fix; ``subscribed`` says whether a pgoutput slot exists."""
    out = []
    why = ("a logical replication slot of this database streams them now" if subscribed else
           "no logical replication slot uses this database now, but a subscriber created during the migration would")
    for pub in publications:
        name = display(pub.name)
        if pub.explicit:
            if not pub.via_root and not (pub.row_filter or pub.columns):
                out.append("%s: publication %s has publish_via_partition_root = false: from the switchover on its "
                           "changes are published under the partitions' names, which a subscriber does not have, "
                           "and a native subscriber stops (HP12; %s). Run ALTER PUBLICATION %s SET "
                           "(publish_via_partition_root = true) (plain tables are published as before)."
                           % (label, name, why, name))
            continue
        scope = "FOR ALL TABLES" if pub.all_tables else "FOR TABLES IN SCHEMA %s" % display(twin[0])
        created = ["the twin %s and its partitions" % qualified(*twin), "%s after the switchover" % qualified(*old)]
        if pub.all_tables:
            created.append("the tables of the state schema %s" % display(state_schema))
        out.append(_publishes_ours(label, name, scope, created, why))
    for name in state_publications:
        out.append(_publishes_ours(label, display(name), "FOR TABLES IN SCHEMA %s" % display(state_schema),
                                   ["the tables of the state schema %s" % display(state_schema)], why))
    return out


def _publishes_ours(label, name, scope, created, why):
    return ("%s: publication %s is %s: it also publishes what the migration creates (%s), and a subscriber that "
            "lacks one of them stops at its first change (logical replication target relation ... does not exist; "
            "HP19; %s). Publish the application's tables by name instead: CREATE PUBLICATION ... FOR TABLE ... WITH "
            "(publish_via_partition_root = true), ALTER SUBSCRIPTION ... SET PUBLICATION ... on each subscriber, "
            "then DROP PUBLICATION %s; or, when every subscriber accepts those tables, set %s: true."
            % (label, name, scope, "; ".join(created), why, name, READY_KNOB))


def review(session, label, info, identity, twin, old, state_schema, ready):
    """Phase 1's review of the table's publications: ``(problems, warnings)``.

    What would fail the swap or the application's writes is always a problem; what would stop a
    subscriber is a problem while somebody subscribes (a pgoutput slot exists) unless ``ready``,
    else a warning."""
    table = (info.schema, info.name)
    problems = membership_problems(label, table, info.publications, identity)
    state_publications = []
    if session.server_version >= 150000 and state_schema != info.schema:
        state_publications = [r["name"] for r in session.query(SCHEMA_PUBLICATIONS_SQL, dict(schema=state_schema))]
    if not (info.publications or state_publications):
        return problems, []
    subscribed = bool(session.scalar(SUBSCRIBED_SQL))
    stops = subscriber_problems(label, info.publications, twin, old, state_schema, state_publications, subscribed)
    if subscribed and not ready:
        return problems + stops, []
    if ready:
        stops = ["%s (accepted: %s)" % (s, READY_KNOB) for s in stops]
    return problems, stops
