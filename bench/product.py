"""The collection's own code, as the benchmarks drive it.

The benchmarks measure *our* code: the sync trigger rendered by the sync module, the
backfill of module_utils/migrate/backfill.py, the swap of module_utils/switchover/swap.py.  Those modules
are written in parallel with the benchmarks; where one is not importable yet, a benchmark
skips with a reason.
"""
import importlib
import inspect

from bench import common  # noqa: F401 - puts the collection on sys.path
from bench import schema

MU = "ansible_collections.dbops.partitioning.plugins.module_utils."
STATE_SCHEMA = "partitioning"
SPEC = dict(table="public.revenues", partition_key="occurred_at", strategy="range", interval="monthly",
            premake=6, default_partition=True)


def optional(module, *names):
    """``module_utils.<module>`` attributes (``module`` dotted below module_utils, e.g.
    ``"switchover.swap"``), or None when the module or a name is missing."""
    try:
        mod = importlib.import_module(MU + module)
    except ImportError:
        return None
    found = [getattr(mod, n, None) for n in names]
    if any(f is None for f in found):
        return None
    return found[0] if len(found) == 1 else found


def templates():
    from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates
    return SqlTemplates.bundled()


def session(conn):
    from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
    return Session(conn)


def table_spec(**overrides):
    normalize_spec = optional("spec", "normalize_spec")
    if normalize_spec is None:
        return None
    raw = dict(SPEC)
    raw.update(overrides)
    return normalize_spec(raw)


def switch_over(sess, table, **spec_overrides):
    """Phase 3 as table_swap runs it: the switchover with the table spec's resolved tuning."""
    from ansible_collections.dbops.partitioning.plugins.module_utils.switchover.swap import switchover
    t = table_spec(**spec_overrides).tuning
    return switchover(sess, templates(), table, state_schema=STATE_SCHEMA, lock_timeout_ms=t["lock_timeout_ms"],
                      swap_retries=t["swap_retries"], max_xact_age_s=t["max_xact_age_s"],
                      max_replica_lag_s=t["max_replica_lag_s"], require_approval=t["switchover_requires_approval"],
                      final_check=t["final_check"])


def prepare_with_phase1(conn, **spec_overrides):
    """Phase 1 exactly as the playbook runs it (twin, partitions, triggers, state row).

    Returns a description of what built the twin, or None when prepare_table is missing.
    """
    prepare_table = optional("prepare.prepare_table", "prepare_table")
    spec = table_spec(**spec_overrides)
    if prepare_table is None or spec is None:
        return None
    sess = session(conn)
    kwargs = {}
    if "now" in inspect.signature(prepare_table).parameters:
        kwargs["now"] = _now()
    prepare_table(sess, templates(), spec, STATE_SCHEMA, **kwargs)
    return "module_utils/prepare/prepare_table.py prepare_table (phase 1)"


def _now():
    import datetime
    return datetime.datetime(2025, 12, 15, tzinfo=datetime.timezone.utc)


def prepare_by_parts(conn):
    """Phase 1 by its parts (describe_table, plan_partitions, ensure_twin, install_sync, state row),
    while prepare_table is not there. Returns a description, or None when a part is missing."""
    describe_table = optional("catalog", "describe_table")
    plan_partitions = optional("bounds", "plan_partitions")
    ensure_twin = optional("prepare.twin", "ensure_twin")
    install = optional("sync", "install_sync")
    spec = table_spec()
    if None in (describe_table, plan_partitions, ensure_twin, install, spec):
        return None
    import json
    from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
    sess = session(conn)
    tpl = templates()
    state_store.ensure_state_schema(sess, tpl, STATE_SCHEMA)
    info = describe_table(sess, "public", schema.TABLE)
    cur = conn.cursor()
    cur.execute("SELECT min(occurred_at), max(occurred_at) FROM public.revenues")
    lo, hi = cur.fetchone()
    with sess.transaction():
        ensure_twin(sess, info, spec, plan_partitions(spec, info.column("occurred_at").type, lo, hi, _now()))
    install(sess, tpl, STATE_SCHEMA, spec, ("public", schema.TABLE), spec.twin, info=info, direction="forward")
    cur.execute("SELECT jsonb_build_object('id', max(id)) FROM public.revenues")
    upper = cur.fetchone()[0]
    with sess.transaction():
        state_store.insert_table(sess, STATE_SCHEMA, "public.revenues", table_schema="public",
                                 table_relname=schema.TABLE, twin_relname=spec.twin[1], old_relname=spec.old[1],
                                 phase="prepared", spec=json.loads(json.dumps(spec.to_json(), default=str)),
                                 pk_columns=list(info.pk_columns), partition_key="occurred_at",
                                 backfill_upper=upper)
    return "phase 1 by its parts: catalog.describe_table, bounds.plan_partitions, twin.ensure_twin, sync.install_sync"


def phase1(conn):
    """Twin + sync triggers + state row 'prepared', by the most complete product code present."""
    how = prepare_with_phase1(conn) or prepare_by_parts(conn)
    if how is not None:
        return how
    from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
    cur = conn.cursor()
    schema.create_twin_by_hand(cur)
    how = "twin by bench/schema.py; trigger by " + install_sync(conn)
    state_store.insert_table(session(conn), STATE_SCHEMA, "public.revenues", table_schema="public",
                             table_relname=schema.TABLE, twin_relname=schema.TWIN, old_relname="revenues_old",
                             spec=SPEC, pk_columns=["id"], partition_key="occurred_at", phase="prepared")
    return how


# --- the sync trigger ----------------------------------------------------------------------

def install_sync(conn):
    """The sync function and triggers on public.revenues -> twin, by the sync module (phase 1's code).

    Returns which code installed them (written into the results).
    """
    from ansible_collections.dbops.partitioning.plugins.module_utils.state import ensure_state_schema
    from ansible_collections.dbops.partitioning.plugins.module_utils.sync import install_sync as install
    sess = session(conn)
    tpl = templates()
    ensure_state_schema(sess, tpl, STATE_SCHEMA)
    install(sess, tpl, STATE_SCHEMA, table_spec(), ("public", schema.TABLE), ("public", schema.TWIN))
    return "module_utils/sync.py install_sync"


def sync_function_source(conn):
    """The name of the function our row trigger executes (whoever installed it)."""
    cur = conn.cursor()
    cur.execute("SELECT tgfoid::regprocedure::text FROM pg_trigger WHERE tgrelid = 'public.revenues'::regclass "
                "AND tgname = 'partitioning_sync'")
    row = cur.fetchone()
    return row[0] if row else None
