# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Catalog introspection of one table: everything a migration must carry over.

``describe_table(session, schema, name)`` returns a ``TableInfo``. The dataclasses below
are the contract that phase 1 (twin), phase 3 (switchover) and rollback rely on.
Definitions are read with PostgreSQL's own deparsers (``pg_get_indexdef``,
``pg_get_constraintdef``, ``pg_get_triggerdef``, ``pg_get_viewdef``, ``pg_get_expr``),
never rebuilt by hand. Two things are assembled from catalog parts because no deparser
gives them in a reusable form: an index's key elements (``Index.key_specs``: the
per-column ``pg_get_indexdef`` text plus COLLATE, operator class and ordering, which that
form omits), and a policy's ``CREATE POLICY`` (``policy_statement``, from ``pg_policy``).

One query per aspect; PostgreSQL 14 to 18. Missing table (or not a table): None.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by run_module
    sql = None

_RELOPTION_NAME = re.compile(r"^[a-z_][a-z0-9_.]*$")


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
    acl: List["Grant"] = field(default_factory=list)   # per-column grants (attacl)
    statistics_target: Optional[int] = None   # ALTER COLUMN SET STATISTICS; None = the default
    storage: Optional[str] = None             # 'p' | 'e' | 'm' | 'x' when it differs from the type's
    compression: Optional[str] = None         # 'p' pglz | 'l' lz4 when set on the column


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
    # Added for rebuilding the index elsewhere: one full element per key position, with
    # COLLATE, operator class (and its options) and ordering, which pg_get_indexdef(oid, k)
    # leaves out.  Expressions are parenthesised, columns quoted.
    key_specs: List[str] = field(default_factory=list)
    nulls_not_distinct: bool = False      # PostgreSQL 15+
    deferrable: bool = False              # constraint-backed indexes
    initially_deferred: bool = False
    is_replica_identity: bool = False     # REPLICA IDENTITY USING INDEX this one


@dataclass
class Constraint:
    name: str
    type: str                      # 'p', 'u', 'c', 'x', 'f', 'n'
    definition: str                # pg_get_constraintdef(oid)
    columns: List[str]
    validated: bool
    deferrable: bool
    comment: Optional[str]
    no_inherit: bool = False
    index_name: Optional[str] = None     # the index backing a PK / UNIQUE / EXCLUDE constraint


@dataclass
class ForeignKey:
    name: str
    definition: str                # pg_get_constraintdef(oid)
    table: Tuple[str, str]         # the referencing table (schema, name)
    columns: List[str]
    ref_table: Tuple[str, str]     # the referenced table
    ref_columns: List[str]
    validated: bool = True
    comment: Optional[str] = None


@dataclass
class Trigger:
    name: str
    definition: str                # pg_get_triggerdef(oid)
    enabled: str                   # 'O' origin, 'D' disabled, 'R' replica, 'A' always
    function: Tuple[str, str]
    comment: Optional[str] = None


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
    oid: int = 0
    column_comments: List[Tuple[str, str]] = field(default_factory=list)  # (column, comment)


@dataclass
class OwnedSequence:
    schema: str
    name: str
    column: str
    identity: bool
    last_value: Optional[int] = None  # None until nextval ran (or without privilege)
    data_type: str = "bigint"
    start: int = 1
    increment: int = 1
    min_value: Optional[int] = None
    max_value: Optional[int] = None
    cache: int = 1
    cycle: bool = False


@dataclass
class ExtendedStatistics:
    schema: str
    name: str
    kinds: List[str]               # of 'ndistinct', 'dependencies', 'mcv' (empty: the default / expression)
    columns: str                   # pg_get_statisticsobjdef_columns(oid): columns and expressions
    definition: str                # pg_get_statisticsobjdef(oid)
    target: Optional[int] = None   # ALTER STATISTICS SET STATISTICS; None = the default


@dataclass
class Grant:
    grantee: str                   # role name, or 'PUBLIC'
    privilege: str                 # SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER, MAINTAIN
    grantable: bool
    grantor: str
    column: Optional[str] = None   # per-column grants


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
    # Added by the catalog reader (additive to the contract):
    grants: List[Grant] = field(default_factory=list)          # aclexplode(relacl or its default)
    column_grants: List[Grant] = field(default_factory=list)   # aclexplode(attacl), column set
    toast_reloptions: List[str] = field(default_factory=list)  # 'toast.' storage parameters, prefixed
    explicit_publications: List[str] = field(default_factory=list)  # members by name (not ALL TABLES / schema)
    partition_key: Optional[str] = None   # pg_get_partkeydef when the table is partitioned
    statistics: List[ExtendedStatistics] = field(default_factory=list)  # CREATE STATISTICS objects
    server_version: int = 0

    def column(self, name):
        for c in self.columns:
            if c.name == name:
                return c
        return None

    @property
    def pk_columns(self):
        return list(self.primary_key.columns) if self.primary_key else []



# ---------------------------------------------------------------------------------------
# The reader.  One query per aspect, every definition from PostgreSQL's own deparsers.
# Compatible with PostgreSQL 14..18: columns that only exist on newer servers are read
# through version checks (indnullsnotdistinct: 15; contype 'n' NOT NULL constraints: 18,
# which are column facts here, not constraints; attgenerated 'v': 18).
# ---------------------------------------------------------------------------------------

# Our own triggers are not part of the application's table.
OWN_TRIGGER_PREFIX = "partitioning_sync"

_TABLE_SQL = """
SELECT c.oid, n.nspname AS schema, c.relname AS name, c.relkind AS kind,
       c.relpersistence AS persistence, pg_catalog.pg_get_userbyid(c.relowner) AS owner,
       COALESCE(c.relacl::text[], '{}') AS acl,
       pg_catalog.obj_description(c.oid, 'pg_class') AS comment,
       COALESCE(c.reloptions, '{}') AS reloptions,
       COALESCE(t.reloptions, '{}') AS toast_reloptions,
       ts.spcname AS tablespace, c.relreplident AS replica_identity,
       c.relrowsecurity AS rls_enabled, c.relforcerowsecurity AS rls_forced,
       GREATEST(c.reltuples, 0)::bigint AS estimated_rows,
       CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END AS partition_key
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_catalog.pg_class t ON t.oid = c.reltoastrelid
  LEFT JOIN pg_catalog.pg_tablespace ts ON ts.oid = c.reltablespace
 WHERE n.nspname = %(schema)s AND c.relname = %(name)s AND c.relkind IN ('r', 'p')
"""

_COLUMNS_SQL = """
SELECT a.attname AS name, a.attnum, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
       a.atttypid AS type_oid, a.attnotnull AS not_null, a.attidentity AS identity,
       a.attgenerated AS generated,
       CASE WHEN a.attgenerated = '' THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END AS "default",
       CASE WHEN a.attgenerated <> '' THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END AS generation_expr,
       CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
            THEN pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname) END AS collation,
       pg_catalog.col_description(a.attrelid, a.attnum) AS comment,
       NULLIF(a.attstattarget, -1) AS statistics_target,
       CASE WHEN a.attstorage <> t.typstorage THEN a.attstorage END AS storage,
       NULLIF(a.attcompression, '') AS compression
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation
  LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
 WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""

_GRANTS_SQL = """
SELECT CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(x.grantee) END AS grantee,
       x.privilege_type AS privilege, x.is_grantable AS grantable,
       pg_catalog.pg_get_userbyid(x.grantor) AS grantor
  FROM pg_catalog.pg_class c,
       LATERAL pg_catalog.aclexplode(COALESCE(c.relacl, pg_catalog.acldefault('r', c.relowner))) x
 WHERE c.oid = %(oid)s
 ORDER BY 1, 2
"""

_COLUMN_GRANTS_SQL = """
SELECT a.attname AS column,
       CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(x.grantee) END AS grantee,
       x.privilege_type AS privilege, x.is_grantable AS grantable,
       pg_catalog.pg_get_userbyid(x.grantor) AS grantor
  FROM pg_catalog.pg_attribute a, LATERAL pg_catalog.aclexplode(a.attacl) x
 WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped AND a.attacl IS NOT NULL
 ORDER BY a.attnum, 2, 3
"""

# PK, UNIQUE, CHECK, EXCLUDE.  Foreign keys are read apart; NOT NULL constraints (contype
# 'n', PostgreSQL 18) are the columns' not_null; constraint triggers ('t') are triggers.
_CONSTRAINTS_SQL = """
SELECT con.conname AS name, con.contype AS type, pg_catalog.pg_get_constraintdef(con.oid) AS definition,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
              ORDER BY k.ord)::text[] AS columns,
       con.convalidated AS validated, con.condeferrable AS deferrable, con.connoinherit AS no_inherit,
       pg_catalog.obj_description(con.oid, 'pg_constraint') AS comment,
       ic.relname AS index_name
  FROM pg_catalog.pg_constraint con
  LEFT JOIN pg_catalog.pg_class ic ON ic.oid = con.conindid AND con.contype IN ('p', 'u', 'x')
 WHERE con.conrelid = %(oid)s AND con.contype IN ('p', 'u', 'c', 'x')
 ORDER BY CASE con.contype WHEN 'p' THEN 0 WHEN 'u' THEN 1 WHEN 'x' THEN 2 ELSE 3 END, con.conname
"""

_INDEXES_SQL = """
SELECT ic.relname AS name, i.indexrelid AS oid, pg_catalog.pg_get_indexdef(i.indexrelid) AS definition,
       i.indisunique AS is_unique, i.indisprimary AS is_primary, i.indisvalid AS is_valid,
       i.indisreplident AS is_replica_identity,
       con.conname AS constraint_name, con.contype AS constraint_type,
       COALESCE(con.condeferrable, false) AS deferrable, COALESCE(con.condeferred, false) AS initially_deferred,
       am.amname AS method, pg_catalog.pg_indexam_has_property(am.oid, 'can_order') AS can_order,
       i.indnkeyatts AS nkey, i.indnatts AS natts,
       pg_catalog.pg_get_expr(i.indpred, i.indrelid, true) AS predicate,
       COALESCE(ic.reloptions, '{}') AS reloptions, ts.spcname AS tablespace,
       pg_catalog.obj_description(i.indexrelid, 'pg_class') AS comment,
       {nulls_not_distinct} AS nulls_not_distinct
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_catalog.pg_am am ON am.oid = ic.relam
  LEFT JOIN pg_catalog.pg_tablespace ts ON ts.oid = ic.reltablespace
  LEFT JOIN pg_catalog.pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                                         AND con.contype IN ('p', 'u', 'x')
 WHERE i.indrelid = %(oid)s
 ORDER BY ic.relname
"""

# One row per index column: the element as CREATE INDEX wants it back.  COLLATE and the
# operator class are always spelled out (equal to the implied ones when they are the
# defaults, which is harmless) because the implied ones cannot be derived in SQL for
# expressions.  Ordering flags follow ruleutils.c (indoption bit 1 DESC, bit 2 NULLS FIRST).
_INDEX_KEYS_SQL = """
SELECT i.indexrelid AS oid, k.n, pg_catalog.pg_get_indexdef(i.indexrelid, k.n, true) AS def,
       i.indkey[k.n - 1] AS attnum, ta.attname AS column,
       CASE WHEN k.n <= i.indnkeyatts AND i.indcollation[k.n - 1] <> 0
            THEN pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname) END AS collation,
       CASE WHEN k.n <= i.indnkeyatts
            THEN pg_catalog.quote_ident(opn.nspname) || '.' || pg_catalog.quote_ident(opc.opcname) END AS opclass,
       CASE WHEN k.n <= i.indnkeyatts THEN i.indoption[k.n - 1] ELSE 0 END AS options,
       ia.attoptions AS opclass_options
  FROM pg_catalog.pg_index i
  CROSS JOIN LATERAL generate_series(1, i.indnatts) AS k(n)
  LEFT JOIN pg_catalog.pg_attribute ta ON ta.attrelid = i.indrelid AND ta.attnum = i.indkey[k.n - 1]
                                       AND i.indkey[k.n - 1] <> 0
  LEFT JOIN pg_catalog.pg_attribute ia ON ia.attrelid = i.indexrelid AND ia.attnum = k.n
  LEFT JOIN pg_catalog.pg_collation co ON co.oid = i.indcollation[k.n - 1]
  LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
  LEFT JOIN pg_catalog.pg_opclass opc ON opc.oid = i.indclass[k.n - 1]
  LEFT JOIN pg_catalog.pg_namespace opn ON opn.oid = opc.opcnamespace
 WHERE i.indrelid = %(oid)s
 ORDER BY i.indexrelid, k.n
"""

_FOREIGN_KEYS_SQL = """
SELECT con.conname AS name, pg_catalog.pg_get_constraintdef(con.oid) AS definition,
       sn.nspname AS schema, s.relname AS table,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
              ORDER BY k.ord)::text[] AS columns,
       rn.nspname AS ref_schema, r.relname AS ref_table,
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(attnum, ord)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum
              ORDER BY k.ord)::text[] AS ref_columns,
       con.convalidated AS validated,
       pg_catalog.obj_description(con.oid, 'pg_constraint') AS comment
  FROM pg_catalog.pg_constraint con
  JOIN pg_catalog.pg_class s ON s.oid = con.conrelid
  JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
  JOIN pg_catalog.pg_class r ON r.oid = con.confrelid
  JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
 WHERE con.contype = 'f' AND con.{side} = %(oid)s AND con.conparentid = 0
 ORDER BY sn.nspname, s.relname, con.conname
"""

_TRIGGERS_SQL = """
SELECT t.tgname AS name, pg_catalog.pg_get_triggerdef(t.oid) AS definition, t.tgenabled AS enabled,
       pn.nspname AS function_schema, p.proname AS function_name,
       pg_catalog.obj_description(t.oid, 'pg_trigger') AS comment
  FROM pg_catalog.pg_trigger t
  JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
  JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
 WHERE t.tgrelid = %(oid)s AND NOT t.tgisinternal
   AND left(t.tgname, length(%(own)s)) <> %(own)s
 ORDER BY t.tgname
"""

_POLICIES_SQL = """
SELECT p.polname AS name, p.polcmd AS cmd, p.polpermissive AS permissive,
       ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(r) END
               FROM unnest(p.polroles) r ORDER BY 1)::text[] AS roles,
       pg_catalog.pg_get_expr(p.polqual, p.polrelid) AS using,
       pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
  FROM pg_catalog.pg_policy p
 WHERE p.polrelid = %(oid)s
 ORDER BY p.polname
"""

# Sequences owned by a column: 'a' (serial, OWNED BY) or 'i' (identity).  last_value as
# the pg_sequences view reads it: NULL without privilege or before the first nextval.
_SEQUENCES_SQL = """
SELECT sn.nspname AS schema, s.relname AS name, a.attname AS column, d.deptype = 'i' AS identity,
       CASE WHEN pg_catalog.has_sequence_privilege(s.oid, 'SELECT,USAGE')
            THEN pg_catalog.pg_sequence_last_value(s.oid) END AS last_value,
       pg_catalog.format_type(q.seqtypid, NULL) AS data_type, q.seqstart AS start,
       q.seqincrement AS increment, q.seqmin AS min_value, q.seqmax AS max_value,
       q.seqcache AS cache, q.seqcycle AS cycle
  FROM pg_catalog.pg_depend d
  JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
  JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
  JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.oid
  JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
 WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
   AND d.refobjid = %(oid)s AND d.deptype IN ('a', 'i')
 ORDER BY a.attnum, s.relname
"""

# Views and materialized views that depend on the table, directly or through other views
# (a view's rule depends on every relation it reads).  Depth = longest path from the
# table, so sorting by it puts every view after the views it reads (outermost last).
_VIEWS_SQL = """
WITH RECURSIVE deps(oid, depth) AS (
    SELECT r.ev_class, 1
      FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
     WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
       AND d.refobjid = %(oid)s AND r.ev_class <> %(oid)s
    UNION
    SELECT r.ev_class, deps.depth + 1
      FROM deps
      JOIN pg_catalog.pg_depend d ON d.refobjid = deps.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass
                                 AND d.classid = 'pg_catalog.pg_rewrite'::regclass
      JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
     WHERE r.ev_class <> deps.oid AND deps.depth < 64
), views AS (
    SELECT oid, max(depth) AS depth FROM deps GROUP BY oid
)
SELECT v.oid, n.nspname AS schema, c.relname AS name, c.relkind AS kind, v.depth,
       pg_catalog.pg_get_viewdef(c.oid, true) AS definition,
       pg_catalog.pg_get_userbyid(c.relowner) AS owner,
       COALESCE(c.relacl::text[], '{}') AS acl,
       pg_catalog.obj_description(c.oid, 'pg_class') AS comment,
       COALESCE(c.reloptions, '{}') AS reloptions,
       ARRAY(SELECT pg_catalog.pg_get_indexdef(i.indexrelid) FROM pg_catalog.pg_index i
              WHERE i.indrelid = c.oid ORDER BY i.indexrelid)::text[] AS indexes,
       ARRAY(SELECT a.attname FROM pg_catalog.pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                AND pg_catalog.col_description(c.oid, a.attnum) IS NOT NULL ORDER BY a.attnum)::text[] AS commented_columns,
       ARRAY(SELECT pg_catalog.col_description(c.oid, a.attnum) FROM pg_catalog.pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                AND pg_catalog.col_description(c.oid, a.attnum) IS NOT NULL ORDER BY a.attnum)::text[] AS column_comments,
       ARRAY(SELECT DISTINCT d.refobjid FROM pg_catalog.pg_rewrite r
               JOIN pg_catalog.pg_depend d ON d.objid = r.oid AND d.classid = 'pg_catalog.pg_rewrite'::regclass
                                          AND d.refclassid = 'pg_catalog.pg_class'::regclass
              WHERE r.ev_class = c.oid AND d.refobjid <> c.oid)::oid[] AS reads,
       EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                 LEFT JOIN pg_catalog.pg_rewrite r ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND r.oid = d.objid
                WHERE d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = c.oid
                  AND ((r.oid IS NOT NULL AND r.ev_class <> c.oid)
                       OR d.classid = 'pg_catalog.pg_proc'::regclass)) AS has_dependents
  FROM views v
  JOIN pg_catalog.pg_class c ON c.oid = v.oid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('v', 'm')
 ORDER BY v.depth, n.nspname, c.relname
"""

# Extended statistics (CREATE STATISTICS) on the table's columns or expressions.
_STATISTICS_SQL = """
SELECT n.nspname AS schema, s.stxname AS name, s.stxkind::text[] AS kinds,
       pg_catalog.pg_get_statisticsobjdef_columns(s.oid) AS columns,
       pg_catalog.pg_get_statisticsobjdef(s.oid) AS definition,
       NULLIF(s.stxstattarget, -1) AS target
  FROM pg_catalog.pg_statistic_ext s
  JOIN pg_catalog.pg_namespace n ON n.oid = s.stxnamespace
 WHERE s.stxrelid = %(oid)s
 ORDER BY n.nspname, s.stxname
"""
_STATISTICS_KINDS = (("d", "ndistinct"), ("f", "dependencies"), ("m", "mcv"))

# SQL-standard function bodies (BEGIN ATOMIC) record a dependency on the table's OID.
_SQL_FUNCTIONS_SQL = """
SELECT DISTINCT p.oid::regprocedure::text AS signature
  FROM pg_catalog.pg_depend d
  JOIN pg_catalog.pg_proc p ON p.oid = d.objid
 WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
   AND d.refobjid = %(oid)s
 ORDER BY 1
"""

# Every publication that publishes the table, however (by name, FOR ALL TABLES, or
# FOR TABLES IN SCHEMA on 15+): pg_publication_tables expands them all.
_PUBLICATIONS_SQL = """
SELECT p.pubname AS name, p.pubviaroot AS via_root,
       EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr
                WHERE pr.prpubid = p.oid AND pr.prrelid = %(oid)s) AS explicit
  FROM pg_catalog.pg_publication p
 WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables pt
                WHERE pt.pubname = p.pubname AND pt.schemaname = %(schema)s AND pt.tablename = %(name)s)
    OR EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr WHERE pr.prpubid = p.oid AND pr.prrelid = %(oid)s)
 ORDER BY p.pubname
"""

_POLICY_COMMANDS = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}


def describe_table(session, schema, name):
    """Read everything about ``schema.name``; None when it does not exist."""
    rows = session.query(_TABLE_SQL, dict(schema=schema, name=name))
    if not rows:
        return None
    t = rows[0]
    oid = t["oid"]
    arg = dict(oid=oid, schema=schema, name=name)
    info = TableInfo(
        oid=oid, schema=t["schema"], name=t["name"], kind=t["kind"], persistence=t["persistence"],
        owner=t["owner"], acl=list(t["acl"]), comment=t["comment"], reloptions=list(t["reloptions"]),
        tablespace=t["tablespace"], replica_identity=t["replica_identity"], rls_enabled=t["rls_enabled"],
        rls_forced=t["rls_forced"], estimated_rows=int(t["estimated_rows"]),
        toast_reloptions=["toast." + o for o in t["toast_reloptions"]], partition_key=t["partition_key"],
        server_version=session.server_version)

    column_grants = {}
    for g in session.query(_COLUMN_GRANTS_SQL, arg):
        grant = Grant(grantee=g["grantee"], privilege=g["privilege"], grantable=g["grantable"],
                      grantor=g["grantor"], column=g["column"])
        info.column_grants.append(grant)
        column_grants.setdefault(g["column"], []).append(grant)
    for c in session.query(_COLUMNS_SQL, arg):
        info.columns.append(Column(
            name=c["name"], attnum=c["attnum"], type=c["type"], type_oid=c["type_oid"], not_null=c["not_null"],
            default=c["default"], identity=c["identity"], generated=c["generated"],
            generation_expr=c["generation_expr"], collation=c["collation"], comment=c["comment"],
            acl=column_grants.get(c["name"], []), statistics_target=c["statistics_target"],
            storage=c["storage"], compression=c["compression"]))

    info.grants = [Grant(grantee=g["grantee"], privilege=g["privilege"], grantable=g["grantable"],
                         grantor=g["grantor"]) for g in session.query(_GRANTS_SQL, arg)]

    for c in session.query(_CONSTRAINTS_SQL, arg):
        con = Constraint(name=c["name"], type=c["type"], definition=c["definition"], columns=list(c["columns"]),
                         validated=c["validated"], deferrable=c["deferrable"], comment=c["comment"],
                         no_inherit=c["no_inherit"], index_name=c["index_name"])
        if con.type == "p":
            info.primary_key = con
        else:
            info.constraints.append(con)

    info.indexes = _read_indexes(session, arg)
    info.foreign_keys = _read_foreign_keys(session, arg, "conrelid")
    info.referenced_by = _read_foreign_keys(session, arg, "confrelid")

    info.triggers = [Trigger(name=r["name"], definition=r["definition"], enabled=r["enabled"],
                             function=(r["function_schema"], r["function_name"]), comment=r["comment"])
                     for r in session.query(_TRIGGERS_SQL, dict(arg, own=OWN_TRIGGER_PREFIX))]

    for p in session.query(_POLICIES_SQL, arg):
        policy = Policy(name=p["name"], definition="", command=_POLICY_COMMANDS.get(p["cmd"], "ALL"),
                        permissive=p["permissive"], roles=list(p["roles"]), using=p["using"],
                        with_check=p["with_check"])
        policy.definition = policy_statement(policy, (info.schema, info.name)).as_string(session.conn)
        info.policies.append(policy)

    info.owned_sequences = [OwnedSequence(
        schema=s["schema"], name=s["name"], column=s["column"], identity=s["identity"],
        last_value=s["last_value"], data_type=s["data_type"], start=s["start"], increment=s["increment"],
        min_value=s["min_value"], max_value=s["max_value"], cache=s["cache"], cycle=s["cycle"])
        for s in session.query(_SEQUENCES_SQL, arg)]

    info.views = _read_views(session, arg)
    for st in session.query(_STATISTICS_SQL, arg):
        present = [word for letter, word in _STATISTICS_KINDS if letter in st["kinds"]]
        info.statistics.append(ExtendedStatistics(
            schema=st["schema"], name=st["name"], columns=st["columns"], definition=st["definition"],
            # all three kinds is what CREATE STATISTICS builds by default; none means a
            # single-expression statistics object (kind 'e' only), where kinds cannot be given
            kinds=[] if len(present) == len(_STATISTICS_KINDS) else present, target=st["target"]))
    info.sql_functions = [r["signature"] for r in session.query(_SQL_FUNCTIONS_SQL, arg)]

    for p in session.query(_PUBLICATIONS_SQL, arg):
        info.publications.append((p["name"], p["via_root"]))
        if p["explicit"]:
            info.explicit_publications.append(p["name"])
    return info


def _read_indexes(session, arg):
    nnd = "i.indnullsnotdistinct" if session.server_version >= 150000 else "false"
    keys = {}
    for k in session.query(_INDEX_KEYS_SQL, arg):
        keys.setdefault(k["oid"], []).append(k)
    out = []
    for r in session.query(_INDEXES_SQL.replace("{nulls_not_distinct}", nnd), arg):
        rows = keys.get(r["oid"], [])
        key_rows, include_rows = rows[: r["nkey"]], rows[r["nkey"]:]
        out.append(Index(
            name=r["name"], oid=r["oid"], definition=r["definition"], is_unique=r["is_unique"],
            is_primary=r["is_primary"], constraint_name=r["constraint_name"],
            constraint_type=r["constraint_type"], method=r["method"],
            key_columns=[k["column"] if k["attnum"] != 0 else None for k in key_rows],
            key_definitions=[k["def"] for k in key_rows],
            include_columns=[k["column"] for k in include_rows],
            predicate=r["predicate"], reloptions=list(r["reloptions"]), tablespace=r["tablespace"],
            is_valid=r["is_valid"], comment=r["comment"],
            key_specs=[_key_spec(session, k, r["can_order"]) for k in key_rows],
            nulls_not_distinct=r["nulls_not_distinct"], deferrable=r["deferrable"],
            initially_deferred=r["initially_deferred"], is_replica_identity=r["is_replica_identity"]))
    return out


def _key_spec(session, k, can_order):
    """One index element, complete: ``"col" COLLATE c opclass (opts) DESC NULLS LAST``.

    The element text comes from the server's deparser (pg_get_indexdef per column, which is
    trusted server output); a column name is re-quoted from the catalog, an expression is
    parenthesised (always valid in CREATE INDEX).
    """
    if k["attnum"] != 0:
        parts = [sql.Identifier(k["column"]).as_string(session.conn)]
    else:
        parts = ["(" + k["def"] + ")"]
    if k["collation"]:
        parts.append("COLLATE " + k["collation"])
    if k["opclass"]:
        opclass = k["opclass"]
        if k["opclass_options"]:
            opclass += " (" + ", ".join(reloption_sql(o).as_string(session.conn) for o in k["opclass_options"]) + ")"
        parts.append(opclass)
    opt = k["options"] or 0
    if can_order:
        if opt & 1:
            parts.append("DESC")
            if not opt & 2:
                parts.append("NULLS LAST")
        elif opt & 2:
            parts.append("NULLS FIRST")
    return " ".join(parts)


def _read_foreign_keys(session, arg, side):
    return [ForeignKey(name=r["name"], definition=r["definition"], table=(r["schema"], r["table"]),
                       columns=list(r["columns"]), ref_table=(r["ref_schema"], r["ref_table"]),
                       ref_columns=list(r["ref_columns"]), validated=r["validated"], comment=r["comment"])
            for r in session.query(_FOREIGN_KEYS_SQL.replace("{side}", side), arg)]


def _read_views(session, arg):
    rows = session.query(_VIEWS_SQL, arg)
    by_oid = dict((r["oid"], (r["schema"], r["name"])) for r in rows)
    return [DependentView(
        schema=r["schema"], name=r["name"], kind=r["kind"], definition=r["definition"], owner=r["owner"],
        acl=list(r["acl"]), comment=r["comment"], reloptions=list(r["reloptions"]),
        depends_on_views=[by_oid[o] for o in r["reads"] if o in by_oid], indexes=list(r["indexes"]),
        has_dependents=r["has_dependents"], oid=r["oid"],
        column_comments=list(zip(r["commented_columns"], r["column_comments"])))
        for r in rows]


def reloption_sql(option):
    """``'fillfactor=70'`` -> ``fillfactor = '70'`` as SQL (name checked, value a literal)."""
    key, _, value = option.partition("=")
    if not _RELOPTION_NAME.match(key):
        raise PartitioningError("Unexpected storage parameter %r in the catalog." % option)
    return sql.SQL("{} = {}").format(sql.SQL(key), sql.Literal(value))


def policy_statement(policy, table):
    """``CREATE POLICY`` for ``policy`` on ``table`` (schema, name), from the catalog's parts.

    USING / WITH CHECK are pg_get_expr output (trusted server text)."""
    roles = sql.SQL(", ").join(sql.SQL("PUBLIC") if r == "PUBLIC" else sql.Identifier(r) for r in policy.roles)
    parts = [sql.SQL("CREATE POLICY {} ON {} AS {} FOR {} TO {}").format(
        sql.Identifier(policy.name), sql.Identifier(*table),
        sql.SQL("PERMISSIVE" if policy.permissive else "RESTRICTIVE"), sql.SQL(policy.command), roles)]
    if policy.using is not None:
        parts.append(sql.SQL("USING ({})").format(sql.SQL(policy.using)))
    if policy.with_check is not None:
        parts.append(sql.SQL("WITH CHECK ({})").format(sql.SQL(policy.with_check)))
    return sql.SQL(" ").join(parts)
