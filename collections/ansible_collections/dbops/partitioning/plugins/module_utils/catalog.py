# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Catalog introspection of one table: everything a migration must carry over.

``describe_table(session, schema, name)`` returns a ``TableInfo``. The dataclasses below
are the contract that phase 1 (twin), phase 3 (switchover) and rollback rely on.
Definitions are read with PostgreSQL's own deparsers (``pg_get_indexdef``,
``pg_get_constraintdef``, ``pg_get_triggerdef``, ``pg_get_viewdef``, ``pg_get_expr``),
never rebuilt by hand.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from dataclasses import dataclass, field
from typing import List, Optional, Tuple


@dataclass
class Column:
    name: str
    attnum: int
    type: str                      # format_type(atttypid, atttypmod), e.g. 'timestamp with time zone'
    type_oid: int
    not_null: bool
    default: Optional[str]         # pg_get_expr(adbin) for ordinary defaults (None for generated)
    identity: str                  # '' | 'a' (ALWAYS) | 'd' (BY DEFAULT)
    generated: str                 # '' | 's' (STORED) | 'v' (VIRTUAL, PostgreSQL 18)
    generation_expr: Optional[str]
    collation: Optional[str]       # quoted, qualified name when it differs from the type's default
    comment: Optional[str]


@dataclass
class Index:
    name: str
    oid: int
    definition: str                # pg_get_indexdef(oid)
    is_unique: bool
    is_primary: bool
    constraint_name: Optional[str]  # the constraint it backs (PK, UNIQUE, EXCLUDE), if any
    constraint_type: Optional[str]  # 'p' | 'u' | 'x' | None
    method: str                    # btree, hash, gin, gist, brin, spgist...
    key_columns: List[Optional[str]]  # one per key position; None where it is an expression
    key_definitions: List[str]     # pg_get_indexdef(oid, k, true) per key position
    include_columns: List[str]
    predicate: Optional[str]       # partial index WHERE clause (pg_get_expr)
    reloptions: List[str]
    tablespace: Optional[str]
    is_valid: bool
    comment: Optional[str]


@dataclass
class Constraint:
    name: str
    type: str                      # 'p', 'u', 'c', 'x', 'f', 'n'
    definition: str                # pg_get_constraintdef(oid)
    columns: List[str]
    validated: bool
    deferrable: bool
    comment: Optional[str]


@dataclass
class ForeignKey:
    name: str
    definition: str                # pg_get_constraintdef(oid)
    table: Tuple[str, str]         # the referencing table (schema, name)
    columns: List[str]
    ref_table: Tuple[str, str]     # the referenced table
    ref_columns: List[str]


@dataclass
class Trigger:
    name: str
    definition: str                # pg_get_triggerdef(oid)
    enabled: str                   # 'O' origin, 'D' disabled, 'R' replica, 'A' always
    function: Tuple[str, str]


@dataclass
class Policy:
    name: str
    definition: str                # CREATE POLICY ... rebuilt from pg_policies (roles quoted)
    command: str
    permissive: bool
    roles: List[str]
    using: Optional[str]
    with_check: Optional[str]


@dataclass
class DependentView:
    schema: str
    name: str
    kind: str                      # 'v' view, 'm' materialized view
    definition: str                # pg_get_viewdef(oid, true)
    owner: str
    acl: List[str]                 # aclitem text
    comment: Optional[str]
    reloptions: List[str]          # security_barrier, check_option, security_invoker...
    depends_on_views: List[Tuple[str, str]]   # other dependent views it selects from
    indexes: List[str]             # index definitions (materialized views)
    has_dependents: bool           # other views or functions depend on this one


@dataclass
class OwnedSequence:
    schema: str
    name: str
    column: str
    identity: bool


@dataclass
class TableInfo:
    oid: int
    schema: str
    name: str
    kind: str                      # 'r' ordinary, 'p' partitioned
    persistence: str               # 'p' permanent, 'u' unlogged
    owner: str
    acl: List[str]
    comment: Optional[str]
    reloptions: List[str]
    tablespace: Optional[str]
    replica_identity: str          # 'd', 'n', 'f', 'i'
    rls_enabled: bool
    rls_forced: bool
    estimated_rows: int            # reltuples (>= 0)
    columns: List[Column] = field(default_factory=list)
    primary_key: Optional[Constraint] = None
    constraints: List[Constraint] = field(default_factory=list)   # unique, check, exclusion, not-null (18)
    indexes: List[Index] = field(default_factory=list)
    foreign_keys: List[ForeignKey] = field(default_factory=list)  # outbound
    referenced_by: List[ForeignKey] = field(default_factory=list)  # inbound
    triggers: List[Trigger] = field(default_factory=list)         # user triggers, ours excluded
    policies: List[Policy] = field(default_factory=list)
    owned_sequences: List[OwnedSequence] = field(default_factory=list)
    views: List[DependentView] = field(default_factory=list)      # dependent views, outermost last
    sql_functions: List[str] = field(default_factory=list)        # BEGIN ATOMIC functions bound to it
    publications: List[Tuple[str, bool]] = field(default_factory=list)  # (name, publish_via_partition_root)

    def column(self, name):
        for c in self.columns:
            if c.name == name:
                return c
        return None

    @property
    def pk_columns(self):
        return list(self.primary_key.columns) if self.primary_key else []


def describe_table(session, schema, name):
    """Read everything about ``schema.name``; None when it does not exist."""
    raise NotImplementedError("filled in by phase 1")
