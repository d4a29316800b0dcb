# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The two tables of a swap, as the catalog describes them before the lock.

The *active* table holds the application's name and its views, triggers, publications and
sequences; the *standby* holds the same rows (a sync trigger keeps it equal in every
transaction) and takes the name. Forward (switchover) the active is the original and the
standby its partitioned twin; rollback swaps them back. Everything the swap decides is decided
from this model (``statements.swap_statements``), read once before the transaction begins.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from dataclasses import asdict, dataclass, field
from typing import List

from ansible_collections.dbops.partitioning.plugins.module_utils import sync
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import TableInfo, describe_table
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import qualified


@dataclass
class SwapPair:
    active: TableInfo
    standby: TableInfo
    sync_triggers: List[dict] = field(default_factory=list)   # ours on the active (sync.sync_triggers): dropped

    @property
    def schema(self):
        return self.active.schema

    @property
    def relations(self):
        """Both tables as (schema, name): what the swap locks and whose blockers it names."""
        return [(self.active.schema, self.active.name), (self.standby.schema, self.standby.name)]

    @property
    def oids(self):
        """The tables and their dependent views: a lock on any of them makes the swap wait."""
        return [self.active.oid, self.standby.oid] + [v.oid for v in self.active.views]

    def bound_functions(self):
        """BEGIN ATOMIC functions bound to the active or its views by OID (HP9)."""
        out = list(self.active.sql_functions)
        for v in self.active.views:
            out.extend(f for f in v.sql_functions if f not in out)
        return out

    def inbound_foreign_keys(self):
        """Other tables' foreign keys that reference the active (HP11); a self-reference moves with it."""
        me = (self.active.schema, self.active.name)
        return [fk for fk in self.active.referenced_by if tuple(fk.table) != me]

    def record(self):
        """What the state row keeps of the active as it was (JSON-able): its triggers, views,
        publications, sequences, RLS flags, owner and comment."""
        a = self.active
        return dict(triggers=[asdict(t) for t in sync.application_triggers(a.triggers)], publications=[asdict(p) for p in a.publications],
                    views=[dict((k, v) for k, v in asdict(x).items() if k != "oid") for x in a.views],
                    sequences=[asdict(s) for s in a.owned_sequences], rls=a.rls_enabled, rls_forced=a.rls_forced,
                    owner=a.owner, comment=a.comment)


def capture(session, schema, active, standby):
    """The pair ``active`` / ``standby`` (names in ``schema``); refuses when either is missing."""
    a = describe_table(session, schema, active)
    if a is None:
        raise PartitioningError("Table %s does not exist." % qualified(schema, active))
    s = describe_table(session, schema, standby)
    if s is None:
        raise PartitioningError("Table %s does not exist: nothing to switch to." % qualified(schema, standby))
    return SwapPair(active=a, standby=s, sync_triggers=sync.sync_triggers(session, (schema, active)))
