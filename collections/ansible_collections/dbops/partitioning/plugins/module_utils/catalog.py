# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The catalog model of a table: the one reader of its catalog facts, asked by every phase.

``describe_table(session, schema, name)`` returns a ``TableInfo`` (None when there is no such
table); ``describe_relation`` the ``Relation`` part alone, for any relation (a partition, a view).
The dataclasses below are the contract that phase 1 (preflight, twin, sync), phase 3
(switchover), rollback and cleanup rely on; the queries are in ``catalog_sql.py``.
Definitions are read with PostgreSQL's own deparsers (``pg_get_indexdef``,
``pg_get_constraintdef``, ``pg_get_triggerdef``, ``pg_get_viewdef``, ``pg_get_expr``),
never rebuilt by hand. Two things are assembled from catalog parts because no deparser
gives them in a reusable form: an index's key elements (``Index.key_specs``: the
per-column ``pg_get_indexdef`` text plus COLLATE, operator class and ordering, which that
form omits), and a policy's ``CREATE POLICY`` (``policy_statement``, from ``pg_policy``).

How names are printed: the table's own definitions (column defaults, constraints, index
elements, policies) as the session sees them, because phase 1 replays them onto the twin in
the same session. The definitions of what depends on the table (views and their indexes,
triggers, BEGIN ATOMIC functions, publication row filters) with every name schema-qualified
(``search_path = pg_catalog``, as pg_dump reads them): the switchover drops and re-creates
those objects around its renames, and their text must name the same objects afterwards.

Grants have one representation everywhere: ``Grant`` rows as ``aclexplode`` gives them, the
grantee ``'PUBLIC'`` for PUBLIC, and ``grant_statement`` turns them back into GRANTs.

Longer than our other modules because it is the whole model in one place: about half of it is
the dataclasses (the contract), the rest one reader per aspect and the few builders of SQL from
the model's parts; the queries themselves are in ``catalog_sql.py``.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import List, Optional, Tuple

from ansible_collections.dbops.partitioning.plugins.module_utils import catalog_sql as q
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError

try:
    import psycopg2.extensions
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by run_module
    sql = None

_RELOPTION_NAME = re.compile(r"^[a-z_][a-z0-9_.]*$")
# Privilege names as aclexplode() spells them; only these are ever printed into a GRANT.
PRIVILEGES = frozenset(("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"))


@dataclass
class Grant:
    grantee: str                   # role name, or 'PUBLIC'
    privilege: str                 # SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER, MAINTAIN
    grantable: bool
    grantor: str
    column: Optional[str] = None   # per-column grants


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
    acl: List[Grant] = field(default_factory=list)   # per-column grants (attacl)
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
    # For rebuilding the index elsewhere: one full element per key position, with COLLATE,
    # operator class (and its options) and ordering, which pg_get_indexdef(oid, k) leaves
    # out.  Expressions are parenthesised, columns quoted.
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
    definition: str                # pg_get_triggerdef(oid), names schema-qualified
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
class ViewIndex:
    name: str
    definition: str                # pg_get_indexdef(oid), names schema-qualified


@dataclass
class DependentView:
    schema: str
    name: str
    kind: str                      # 'v' view, 'm' materialized view
    definition: str                # pg_get_viewdef(oid): not pretty-printed, names schema-qualified
    owner: str
    acl: List[str]                 # aclitem text
    comment: Optional[str]
    reloptions: List[str]          # security_barrier, check_option, security_invoker...
    depends_on_views: List[Tuple[str, str]]   # other dependent views it selects from
    indexes: List[ViewIndex]       # materialized views' indexes
    has_dependents: bool           # other views or functions depend on this one
    oid: int = 0
    column_comments: List[Tuple[str, str]] = field(default_factory=list)  # (column, comment)
    depth: int = 1                 # longest chain of views from the table to this one
    reads_table: bool = True       # selects from the table itself (not only through other views)
    tablespace: Optional[str] = None
    grants: List[Grant] = field(default_factory=list)       # aclexplode(relacl or its default)
    triggers: List[Trigger] = field(default_factory=list)   # INSTEAD OF triggers of the view
    sql_functions: List[str] = field(default_factory=list)  # BEGIN ATOMIC functions bound to the view


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
class Publication:
    name: str
    via_root: bool                 # publish_via_partition_root
    explicit: bool                 # a member by name (not FOR ALL TABLES / TABLES IN SCHEMA)
    row_filter: Optional[str] = None      # WHERE (...) of the membership (15+), names qualified
    columns: Optional[List[str]] = None   # the membership's column list (15+); None = all
    all_tables: bool = False       # FOR ALL TABLES
    owner: str = ""
    actions: List[str] = field(default_factory=list)   # what it publishes: insert, update, delete, truncate


@dataclass
class PartitionInfo:
    schema: str
    name: str
    oid: int
    bound: str                     # pg_get_expr(relpartbound): 'FOR VALUES ...' or 'DEFAULT'
    constraint: Optional[str] = None  # pg_get_partition_constraintdef: the bound as a condition on a row


@dataclass
class Relation:
    """What pg_class says of one relation, with its privileges."""
    oid: int
    schema: str
    name: str
    kind: str                      # 'r' ordinary, 'p' partitioned, 'v', 'm', 'S', 'i', ...
    persistence: str               # 'p' permanent, 'u' unlogged
    owner: str
    acl: List[str]                 # aclitem text
    comment: Optional[str]
    reloptions: List[str]
    tablespace: Optional[str]
    replica_identity: str          # 'd', 'n', 'f', 'i'
    rls_enabled: bool
    rls_forced: bool
    estimated_rows: int            # reltuples (>= 0)
    quoted: Tuple[str, str] = ("", "")     # (schema, name) as the deparsers print them (quote_ident)
    parent: Optional[int] = None   # the partitioned table's oid, when this is a partition
    parents: int = 0               # tables it inherits from (pg_inherits: a partition has one)
    children: int = 0              # tables inheriting from it (a partitioned table's partitions)
    typed: bool = False            # CREATE TABLE ... OF type
    grants: List[Grant] = field(default_factory=list)          # aclexplode(relacl or its default)
    column_grants: List[Grant] = field(default_factory=list)   # aclexplode(attacl), column set
    toast_reloptions: List[str] = field(default_factory=list)  # 'toast.' storage parameters, prefixed
    partition_key: Optional[str] = None   # pg_get_partkeydef when the table is partitioned
    server_version: int = 0

    @property
    def deparsed_name(self):
        """``schema.name`` exactly as a deparsed view definition names this relation."""
        return "%s.%s" % self.quoted


@dataclass
class TableInfo(Relation):
    columns: List[Column] = field(default_factory=list)
    primary_key: Optional[Constraint] = None
    constraints: List[Constraint] = field(default_factory=list)   # unique, check, exclusion, not-null (18)
    indexes: List[Index] = field(default_factory=list)
    foreign_keys: List[ForeignKey] = field(default_factory=list)  # outbound
    referenced_by: List[ForeignKey] = field(default_factory=list)  # inbound
    triggers: List[Trigger] = field(default_factory=list)         # user triggers, ours too: see sync.application_triggers
    policies: List[Policy] = field(default_factory=list)
    owned_sequences: List[OwnedSequence] = field(default_factory=list)
    views: List[DependentView] = field(default_factory=list)      # dependent views, outermost last
    sql_functions: List[str] = field(default_factory=list)        # BEGIN ATOMIC functions bound to it
    publications: List[Publication] = field(default_factory=list)  # every publication that publishes it
    statistics: List[ExtendedStatistics] = field(default_factory=list)  # CREATE STATISTICS objects
    partitions: List[PartitionInfo] = field(default_factory=list)  # when partitioned, by name

    def column(self, name):
        for c in self.columns:
            if c.name == name:
                return c
        return None

    @property
    def pk_columns(self):
        return list(self.primary_key.columns) if self.primary_key else []

    @property
    def stored_columns(self):
        """The columns a row is written with: all but the generated ones (computed by the table)."""
        return [c.name for c in self.columns if not c.generated]

    @property
    def identity_columns(self):
        """The replica identity's columns, which a publication's column list must cover for UPDATE
        and DELETE (HP19): the primary key's, the ``USING INDEX`` index's, every stored column for
        FULL, none for NOTHING (or without a key)."""
        if self.replica_identity == "n":
            return []
        if self.replica_identity == "f":
            return self.stored_columns
        if self.replica_identity == "i":
            ix = next((i for i in self.indexes if i.is_replica_identity), None)
            return [c for c in ix.key_columns if c] if ix else []
        return self.pk_columns

    @property
    def explicit_publications(self):
        """The publications the table is a member of by name."""
        return [p.name for p in self.publications if p.explicit]


# ---------------------------------------------------------------------------------------
# The reader.  One query per aspect, every definition from PostgreSQL's own deparsers.
# ---------------------------------------------------------------------------------------


_POLICY_COMMANDS = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}
_STATISTICS_KINDS = (("d", "ndistinct"), ("f", "dependencies"), ("m", "mcv"))


def _grant(row, column=None):
    return Grant(grantee=row["grantee"], privilege=row["privilege"], grantable=row["grantable"],
                 grantor=row["grantor"], column=column)


def _grants_by_relation(session, oids):
    out = {}
    for g in session.query(q.GRANTS_SQL, dict(oids=list(oids))):
        out.setdefault(g["relation"], []).append(_grant(g))
    return out


def describe_relation(session, schema, name):
    """``schema.name`` as pg_class describes it, with its grants; None when there is no such relation."""
    rows = session.query(q.RELATION_SQL, dict(schema=schema, name=name))
    if not rows:
        return None
    t = rows[0]
    rel = Relation(
        oid=t["oid"], schema=t["schema"], name=t["name"], kind=t["kind"], persistence=t["persistence"],
        owner=t["owner"], acl=list(t["acl"]), comment=t["comment"], reloptions=list(t["reloptions"]),
        tablespace=t["tablespace"], replica_identity=t["replica_identity"], rls_enabled=t["rls_enabled"],
        rls_forced=t["rls_forced"], estimated_rows=int(t["estimated_rows"]),
        quoted=(t["quoted_schema"], t["quoted_name"]), parent=t["parent"], parents=int(t["parents"]),
        children=int(t["children"]), typed=t["typed"],
        toast_reloptions=["toast." + o for o in t["toast_reloptions"]], partition_key=t["partition_key"],
        server_version=session.server_version)
    rel.grants = _grants_by_relation(session, [rel.oid]).get(rel.oid, [])
    rel.column_grants = [_grant(g, g["column"]) for g in session.query(q.COLUMN_GRANTS_SQL, dict(oid=rel.oid))]
    return rel


def describe_table(session, schema, name):
    """Read everything about the table ``schema.name``; None when there is no such table."""
    rel = describe_relation(session, schema, name)
    if rel is None or rel.kind not in ("r", "p"):
        return None
    info = TableInfo(**dict((f.name, getattr(rel, f.name)) for f in fields(Relation)))
    arg = dict(oid=info.oid, schema=info.schema, name=info.name)

    column_grants = {}
    for grant in info.column_grants:
        column_grants.setdefault(grant.column, []).append(grant)
    for c in session.query(q.COLUMNS_SQL, arg):
        info.columns.append(Column(
            name=c["name"], attnum=c["attnum"], type=c["type"], type_oid=c["type_oid"], not_null=c["not_null"],
            default=c["default"], identity=c["identity"], generated=c["generated"],
            generation_expr=c["generation_expr"], collation=c["collation"], comment=c["comment"],
            acl=column_grants.get(c["name"], []), statistics_target=c["statistics_target"],
            storage=c["storage"], compression=c["compression"]))

    for c in session.query(q.CONSTRAINTS_SQL, arg):
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

    for p in session.query(q.POLICIES_SQL, arg):
        policy = Policy(name=p["name"], definition="", command=_POLICY_COMMANDS.get(p["cmd"], "ALL"),
                        permissive=p["permissive"], roles=list(p["roles"]), using=p["using"],
                        with_check=p["with_check"])
        policy.definition = policy_statement(policy, (info.schema, info.name)).as_string(session.conn)
        info.policies.append(policy)

    info.owned_sequences = [OwnedSequence(
        schema=s["schema"], name=s["name"], column=s["column"], identity=s["identity"],
        last_value=s["last_value"], data_type=s["data_type"], start=s["start"], increment=s["increment"],
        min_value=s["min_value"], max_value=s["max_value"], cache=s["cache"], cycle=s["cycle"])
        for s in session.query(q.SEQUENCES_SQL, arg)]

    for st in session.query(q.STATISTICS_SQL, arg):
        present = [word for letter, word in _STATISTICS_KINDS if letter in st["kinds"]]
        info.statistics.append(ExtendedStatistics(
            schema=st["schema"], name=st["name"], columns=st["columns"], definition=st["definition"],
            # all three kinds is what CREATE STATISTICS builds by default; none means a
            # single-expression statistics object (kind 'e' only), where kinds cannot be given
            kinds=[] if len(present) == len(_STATISTICS_KINDS) else present, target=st["target"]))

    if info.kind == "p":
        info.partitions = partitions_of(session, info.schema, info.name)
    with _names_qualified(session):
        _read_dependents(session, info, arg)
    return info


def _read_dependents(session, info, arg):
    """Views, triggers, BEGIN ATOMIC functions and publications: what the switchover re-creates."""
    rows = session.query(q.VIEWS_SQL, arg)
    oids = [info.oid] + [r["oid"] for r in rows]
    grants = _grants_by_relation(session, [r["oid"] for r in rows]) if rows else {}
    triggers, functions = {}, {}
    for r in session.query(q.TRIGGERS_SQL, dict(oids=oids)):
        triggers.setdefault(r["relation"], []).append(Trigger(
            name=r["name"], definition=r["definition"], enabled=r["enabled"],
            function=(r["function_schema"], r["function_name"]), comment=r["comment"]))
    for r in session.query(q.SQL_FUNCTIONS_SQL, dict(oids=oids)):
        functions.setdefault(r["relation"], []).append(r["signature"])
    by_oid = dict((r["oid"], (r["schema"], r["name"])) for r in rows)
    info.views = [DependentView(
        schema=r["schema"], name=r["name"], kind=r["kind"], definition=r["definition"], owner=r["owner"],
        acl=list(r["acl"]), comment=r["comment"], reloptions=list(r["reloptions"]),
        depends_on_views=[by_oid[o] for o in r["reads"] if o in by_oid],
        indexes=[ViewIndex(n, d) for n, d in zip(r["index_names"], r["index_definitions"])],
        has_dependents=r["has_dependents"], oid=r["oid"],
        column_comments=list(zip(r["commented_columns"], r["column_comments"])),
        depth=r["depth"], reads_table=info.oid in r["reads"], tablespace=r["tablespace"],
        grants=grants.get(r["oid"], []), triggers=triggers.get(r["oid"], []),
        sql_functions=functions.get(r["oid"], []))
        for r in rows]
    info.triggers = triggers.get(info.oid, [])
    info.sql_functions = functions.get(info.oid, [])
    membership = q.PUBLICATION_MEMBERSHIP_15 if session.server_version >= 150000 else q.PUBLICATION_MEMBERSHIP_14
    info.publications = [Publication(name=p["name"], via_root=p["via_root"], explicit=p["explicit"],
                                     row_filter=p["row_filter"], columns=list(p["columns"]) if p["columns"] else None,
                                     all_tables=p["all_tables"], owner=p["owner"], actions=list(p["actions"]))
                         for p in session.query(q.PUBLICATIONS_SQL.replace("{membership}", membership), arg)]


@contextmanager
def _names_qualified(session):
    """Deparse with ``search_path = pg_catalog, pg_temp``: every other schema's name is printed."""
    old = session.scalar("SELECT pg_catalog.current_setting('search_path')")
    session.query("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)")
    try:
        yield
    finally:
        # in a failed transaction the ROLLBACK that follows restores the setting by itself
        if session.conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_INERROR:
            session.query("SELECT pg_catalog.set_config('search_path', %s, false)", (old,))


def schema_relations(session, schema):
    """Every relation of ``schema`` by name: [(name, relkind, name of the table it is a child of)]."""
    return [(r["name"], r["kind"], r["parent"]) for r in session.query(q.SCHEMA_RELATIONS_SQL, dict(schema=schema))]


def partitions_of(session, schema, name):
    """The partitions of the partitioned table ``schema.name``, by name, with their bounds."""
    return [PartitionInfo(schema=r["schema"], name=r["name"], oid=r["oid"], bound=r["bound"],
                          constraint=r["constraint"])
            for r in session.query(q.PARTITIONS_SQL, dict(schema=schema, name=name))]


def attached_indexes(session, schema, index):
    """{(schema, partition): its index} of the partitions' indexes attached to the partitioned
    index ``schema.index``."""
    return dict(((r["schema"], r["partition"]), r["index"])
                for r in session.query(q.ATTACHED_INDEXES_SQL, dict(schema=schema, index=index)))


def row_type(session, schema, name):
    """[(column, type oid)] of any relation ``schema.name`` in order (empty when there is none)."""
    return [(r["name"], r["type_oid"]) for r in session.query(q.ROW_TYPE_SQL, dict(schema=schema, name=name))]


def index_is_valid(session, schema, name):
    """indisvalid of the index ``schema.name``; None when there is no such index."""
    return session.scalar(q.INDEX_VALID_SQL, dict(schema=schema, name=name))


def _read_indexes(session, arg):
    nnd = "i.indnullsnotdistinct" if session.server_version >= 150000 else "false"
    keys = {}
    for k in session.query(q.INDEX_KEYS_SQL, arg):
        keys.setdefault(k["oid"], []).append(k)
    out = []
    for r in session.query(q.INDEXES_SQL.replace("{nulls_not_distinct}", nnd), arg):
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
            for r in session.query(q.FOREIGN_KEYS_SQL.replace("{side}", side), arg)]


# ---------------------------------------------------------------------------------------
# SQL from the model's parts (pure: no server needed)
# ---------------------------------------------------------------------------------------

def reloption_sql(option):
    """``'fillfactor=70'`` -> ``fillfactor = '70'`` as SQL (name checked, value a literal)."""
    key, _unused, value = option.partition("=")
    if not _RELOPTION_NAME.match(key):
        raise PartitioningError("Unexpected storage parameter %r in the catalog." % option)
    return sql.SQL("{} = {}").format(sql.SQL(key), sql.Literal(value))


def role_sql(role):
    """A grantee or policy role: the keyword PUBLIC, or a quoted role name."""
    return sql.SQL("PUBLIC") if role == "PUBLIC" else sql.Identifier(role)


def policy_statement(policy, table):
    """``CREATE POLICY`` for ``policy`` on ``table`` (schema, name), from the catalog's parts.

    USING / WITH CHECK are pg_get_expr output (trusted server text)."""
    roles = sql.SQL(", ").join(role_sql(r) for r in policy.roles)
    parts = [sql.SQL("CREATE POLICY {} ON {} AS {} FOR {} TO {}").format(
        sql.Identifier(policy.name), sql.Identifier(*table),
        sql.SQL("PERMISSIVE" if policy.permissive else "RESTRICTIVE"), sql.SQL(policy.command), roles)]
    if policy.using is not None:
        parts.append(sql.SQL("USING ({})").format(sql.SQL(policy.using)))
    if policy.with_check is not None:
        parts.append(sql.SQL("WITH CHECK ({})").format(sql.SQL(policy.with_check)))
    return sql.SQL(" ").join(parts)


def _privilege(name):
    if name not in PRIVILEGES:
        raise PartitioningError("Unexpected privilege %r in the catalog." % (name,))
    return sql.SQL(name)


def grant_statement(privileges, relation, grantee, grantable=False, column=None):
    """``GRANT <privileges> [(column)] ON TABLE <relation> TO <grantee> [WITH GRANT OPTION]``;
    ``relation`` is (schema, name), ``grantee`` a role or 'PUBLIC' (as ``Grant`` has them)."""
    stmt = sql.SQL("GRANT {}{} ON TABLE {} TO {}").format(
        sql.SQL(", ").join(_privilege(p) for p in privileges),
        sql.SQL(" ({})").format(sql.Identifier(column)) if column else sql.SQL(""),
        sql.Identifier(*relation), role_sql(grantee))
    return stmt + sql.SQL(" WITH GRANT OPTION") if grantable else stmt


def missing_grants(wanted, relation, owner, have=()):
    """The table grants of ``wanted`` that ``relation`` lacks (``have``), one GRANT per grantee and
    grant option: a list of (grantee, privileges, statement). The owner's own privileges are
    implicit (and follow ALTER OWNER), so they are left alone."""
    present = set((g.grantee, g.privilege, g.grantable) for g in have)
    missing = {}
    for g in wanted:
        if g.grantee != owner and (g.grantee, g.privilege, g.grantable) not in present:
            missing.setdefault((g.grantee, g.grantable), []).append(g.privilege)
    return [(grantee, sorted(privileges), grant_statement(sorted(privileges), relation, grantee, grantable))
            for (grantee, grantable), privileges in sorted(missing.items())]
