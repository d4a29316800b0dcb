# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The catalog queries behind ``catalog.describe_table``: one per aspect of a table.

Every definition comes from PostgreSQL's own deparsers. Compatible with PostgreSQL 14 to 18:
what only exists on newer servers is read through version checks in catalog.py
(indnullsnotdistinct and publication row filters / column lists: 15; contype 'n' NOT NULL
constraints: 18, which are column facts here, not constraints; attgenerated 'v': 18).
Queries about several relations at once (a table and its views) take ``%(oids)s`` and
return the relation each row belongs to.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

# Any relation by name (tables, partitions, views...): catalog.describe_relation.
# quote_ident: the name as the deparsers print it (a view's definition names the table so).
RELATION_SQL = """
SELECT c.oid, n.nspname AS schema, c.relname AS name, c.relkind AS kind,
       c.relpersistence AS persistence, pg_catalog.pg_get_userbyid(c.relowner) AS owner,
       COALESCE(c.relacl::text[], '{}') AS acl,
       pg_catalog.obj_description(c.oid, 'pg_class') AS comment,
       COALESCE(c.reloptions, '{}') AS reloptions,
       COALESCE(t.reloptions, '{}') AS toast_reloptions,
       ts.spcname AS tablespace, c.relreplident AS replica_identity,
       c.relrowsecurity AS rls_enabled, c.relforcerowsecurity AS rls_forced,
       GREATEST(c.reltuples, 0)::bigint AS estimated_rows,
       CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END AS partition_key,
       (SELECT i.inhparent FROM pg_catalog.pg_inherits i
         WHERE i.inhrelid = c.oid AND c.relispartition ORDER BY i.inhseqno LIMIT 1) AS parent,
       (SELECT count(*) FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid) AS parents,
       (SELECT count(*) FROM pg_catalog.pg_inherits i WHERE i.inhparent = c.oid) AS children,
       c.reloftype <> 0 AS typed,
       pg_catalog.quote_ident(n.nspname) AS quoted_schema, pg_catalog.quote_ident(c.relname) AS quoted_name
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_catalog.pg_class t ON t.oid = c.reltoastrelid
  LEFT JOIN pg_catalog.pg_tablespace ts ON ts.oid = c.reltablespace
 WHERE n.nspname = %(schema)s AND c.relname = %(name)s
"""

COLUMNS_SQL = """
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

# Privileges as aclexplode() spells them, PUBLIC as 'PUBLIC' (grantee 0). A relation that
# was never granted anything (relacl NULL) has its owner's default privileges.
GRANTS_SQL = """
SELECT c.oid AS relation,
       CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(x.grantee) END AS grantee,
       x.privilege_type AS privilege, x.is_grantable AS grantable,
       pg_catalog.pg_get_userbyid(x.grantor) AS grantor
  FROM pg_catalog.pg_class c,
       LATERAL pg_catalog.aclexplode(COALESCE(c.relacl, pg_catalog.acldefault('r', c.relowner))) x
 WHERE c.oid = ANY (%(oids)s)
 ORDER BY 1, 2, 3
"""

COLUMN_GRANTS_SQL = """
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
CONSTRAINTS_SQL = """
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

INDEXES_SQL = """
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
INDEX_KEYS_SQL = """
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

FOREIGN_KEYS_SQL = """
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

# The triggers of a table and of its views (INSTEAD OF): not internal (foreign keys), not
# clones of a parent's trigger on a partition. Ours included: sync.application_triggers leaves
# them out.
TRIGGERS_SQL = """
SELECT t.tgrelid AS relation, t.tgname AS name, pg_catalog.pg_get_triggerdef(t.oid) AS definition,
       t.tgenabled AS enabled, pn.nspname AS function_schema, p.proname AS function_name,
       pg_catalog.obj_description(t.oid, 'pg_trigger') AS comment
  FROM pg_catalog.pg_trigger t
  JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
  JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
 WHERE t.tgrelid = ANY (%(oids)s) AND NOT t.tgisinternal AND t.tgparentid = 0
 ORDER BY t.tgrelid, t.tgname
"""

POLICIES_SQL = """
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
SEQUENCES_SQL = """
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
#
# This is the one dependent-view recursion (the switchover drops and re-creates what it
# finds).  UNION, not UNION ALL: a view reached along several paths (a diamond of views)
# is kept once per depth, so the rows grow with the views, not with the number of paths.
# The depth guard ends the recursion on a cycle, which CREATE OR REPLACE VIEW can make in
# pg_depend (such views fail when queried); 64 nested views is deeper than any real schema.
# The definition is pg_get_viewdef(oid) without pretty-printing: the pretty form leaves
# out parentheses it considers unneeded and is not guaranteed to read back the same
# (pg_dump never uses it); this text is executed again to re-create the view.
VIEWS_SQL = """
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
       pg_catalog.pg_get_viewdef(c.oid) AS definition,
       pg_catalog.pg_get_userbyid(c.relowner) AS owner,
       COALESCE(c.relacl::text[], '{}') AS acl,
       pg_catalog.obj_description(c.oid, 'pg_class') AS comment,
       COALESCE(c.reloptions, '{}') AS reloptions,
       ts.spcname AS tablespace,
       ARRAY(SELECT ic.relname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
              WHERE i.indrelid = c.oid ORDER BY ic.relname)::text[] AS index_names,
       ARRAY(SELECT pg_catalog.pg_get_indexdef(i.indexrelid) FROM pg_catalog.pg_index i
               JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
              WHERE i.indrelid = c.oid ORDER BY ic.relname)::text[] AS index_definitions,
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
  LEFT JOIN pg_catalog.pg_tablespace ts ON ts.oid = c.reltablespace
 WHERE c.relkind IN ('v', 'm')
 ORDER BY v.depth, n.nspname, c.relname
"""

# Extended statistics (CREATE STATISTICS) on the table's columns or expressions.
STATISTICS_SQL = """
SELECT n.nspname AS schema, s.stxname AS name, s.stxkind::text[] AS kinds,
       pg_catalog.pg_get_statisticsobjdef_columns(s.oid) AS columns,
       pg_catalog.pg_get_statisticsobjdef(s.oid) AS definition,
       NULLIF(s.stxstattarget, -1) AS target
  FROM pg_catalog.pg_statistic_ext s
  JOIN pg_catalog.pg_namespace n ON n.oid = s.stxnamespace
 WHERE s.stxrelid = %(oid)s
 ORDER BY n.nspname, s.stxname
"""

# SQL-standard function bodies (BEGIN ATOMIC) record a dependency on the OIDs they use.
SQL_FUNCTIONS_SQL = """
SELECT DISTINCT d.refobjid AS relation, p.oid::regprocedure::text AS signature
  FROM pg_catalog.pg_depend d
  JOIN pg_catalog.pg_proc p ON p.oid = d.objid
 WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
   AND d.refobjid = ANY (%(oids)s)
 ORDER BY 1, 2
"""

# Every publication that publishes the table, however (by name, FOR ALL TABLES, or
# FOR TABLES IN SCHEMA on 15+): pg_publication_tables expands them all.  A membership by
# name carries its row filter and column list (15+; NULL before).
PUBLICATIONS_SQL = """
SELECT p.pubname AS name, p.pubviaroot AS via_root, pr.oid IS NOT NULL AS explicit, {membership},
       p.puballtables AS all_tables, pg_catalog.pg_get_userbyid(p.pubowner) AS owner,
       ARRAY(SELECT a FROM unnest(ARRAY['insert', 'update', 'delete', 'truncate'],
                                  ARRAY[p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate]) AS x(a, on_)
              WHERE x.on_)::text[] AS actions
  FROM pg_catalog.pg_publication p
  LEFT JOIN pg_catalog.pg_publication_rel pr ON pr.prpubid = p.oid AND pr.prrelid = %(oid)s
 WHERE pr.oid IS NOT NULL
    OR EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables pt
                WHERE pt.pubname = p.pubname AND pt.schemaname = %(schema)s AND pt.tablename = %(name)s)
 ORDER BY p.pubname
"""
PUBLICATION_MEMBERSHIP_15 = (
    "pg_catalog.pg_get_expr(pr.prqual, pr.prrelid) AS row_filter, "
    "(SELECT array_agg(a.attname ORDER BY a.attnum)::text[] FROM pg_catalog.pg_attribute a "
    "  WHERE a.attrelid = pr.prrelid AND a.attnum = ANY (pr.prattrs)) AS columns")
PUBLICATION_MEMBERSHIP_14 = "NULL::text AS row_filter, NULL::text[] AS columns"

# Every relation of a schema (tables, indexes, views, sequences...), with the table it is a
# partition (or an inheritance child) of.
SCHEMA_RELATIONS_SQL = """
SELECT c.relname AS name, c.relkind AS kind,
       (SELECT p.relname FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class p ON p.oid = i.inhparent
         WHERE i.inhrelid = c.oid ORDER BY i.inhseqno LIMIT 1) AS parent
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s
 ORDER BY c.relname
"""

# The partitions of a partitioned table with their bounds (pg_get_expr of relpartbound) and
# the constraint a row of each satisfies (its bound as a condition; a default partition's is
# the negation of its siblings').
PARTITIONS_SQL = """
SELECT n.nspname AS schema, c.relname AS name, c.oid, pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS bound,
       pg_catalog.pg_get_partition_constraintdef(c.oid) AS constraint
  FROM pg_catalog.pg_inherits i
  JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE i.inhparent = (SELECT p.oid FROM pg_catalog.pg_class p JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
                        WHERE pn.nspname = %(schema)s AND p.relname = %(name)s)
 ORDER BY c.relname
"""

# The partitions' indexes attached to one index of a partitioned table.
ATTACHED_INDEXES_SQL = """
SELECT tn.nspname AS schema, t.relname AS partition, ci.relname AS index
  FROM pg_catalog.pg_inherits h
  JOIN pg_catalog.pg_class ci ON ci.oid = h.inhrelid
  JOIN pg_catalog.pg_index x ON x.indexrelid = h.inhrelid
  JOIN pg_catalog.pg_class t ON t.oid = x.indrelid
  JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
  JOIN pg_catalog.pg_class pi ON pi.oid = h.inhparent
  JOIN pg_catalog.pg_namespace pn ON pn.oid = pi.relnamespace
 WHERE pn.nspname = %(schema)s AND pi.relname = %(index)s
"""

# The columns of any relation by name, in order: what SELECT * of it returns.
ROW_TYPE_SQL = """
SELECT a.attname AS name, a.atttypid AS type_oid
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s AND c.relname = %(name)s AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""

INDEX_VALID_SQL = """
SELECT i.indisvalid FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s AND c.relname = %(name)s
"""
