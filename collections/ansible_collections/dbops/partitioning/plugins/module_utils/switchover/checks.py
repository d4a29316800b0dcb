# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What makes a swap impossible, found before it is tried: each refusal names the object and
what to do. Pure: they read the captured pair only (the server-side checks, long transactions,
replica lag and the final comparison, are the switchover's own)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.publications import membership_problems


def key_problems(pair):
    """The standby has no primary key: the reverse sync and the reconciliation find rows by it."""
    return [] if pair.standby.pk_columns else ["%s has no primary key" % pair.standby.name]


def shape_problems(pair):
    """The standby cannot take the active's place: no primary key, columns missing."""
    out = key_problems(pair)
    missing = [c.name for c in pair.active.columns if pair.standby.column(c.name) is None]
    if missing:
        out.append("%s lacks columns of %s: %s" % (pair.standby.name, pair.active.name, ", ".join(missing)))
    return out


def bound_problems(pair):
    """Objects bound to the active's OID that cannot follow a rename (HP9, HP11)."""
    out = []
    functions = pair.bound_functions()
    if functions:
        out.append("functions with SQL-standard bodies (BEGIN ATOMIC) are bound to %s or its views and would keep "
                   "using the old table: %s; rewrite them in PL/pgSQL or drop them first"
                   % (pair.active.name, ", ".join(functions)))
    inbound = pair.inbound_foreign_keys()
    if inbound:
        out.append("foreign keys reference %s and cannot follow the swap (HP11): %s; drop them or set "
                   "inbound_foreign_keys: drop in phase 1"
                   % (pair.active.name, ", ".join("%s on %s" % (fk.name, qualified(*fk.table)) for fk in inbound)))
    return out


def missing_policies(pair):
    """RLS policies of the active that the standby lacks (phase 1 creates them on the twin)."""
    return sorted(set(p.name for p in pair.active.policies) - set(p.name for p in pair.standby.policies))


def publication_problems(pair, table_name):
    """Memberships the partitioned table cannot keep (a row filter or column list without
    publish_via_partition_root, a column list without its replica identity): the swap, or the
    application's UPDATEs and DELETEs after it, would fail (HP19). Phase 1 refused them; a
    publication altered since is refused here, with the same fix. Forward only: the original
    table takes back what the partitioned one had."""
    if pair.standby.kind != "p":
        return []
    return membership_problems(table_name, pair.relations[0], pair.active.publications,
                               pair.standby.identity_columns)


def publication_warnings(pair):
    return ["publication %s has publish_via_partition_root = false: subscribers will see the partitions' names "
            "(HP12)" % p.name for p in pair.active.publications if p.explicit and not p.via_root]
