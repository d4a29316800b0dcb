"""status.yml / partition_stats on a database: read-only facts, never a change."""
from ..helpers.playbook_runner import run_playbook


def _partitioned_table(conn):
    cur = conn.cursor()
    cur.execute("""
        CREATE TABLE public.events (id bigint NOT NULL, at date NOT NULL, PRIMARY KEY (id, at))
            PARTITION BY RANGE (at);
        CREATE TABLE public.events_2020 PARTITION OF public.events FOR VALUES FROM ('2020-01-01') TO ('2021-01-01');
        CREATE TABLE public.events_2999 PARTITION OF public.events FOR VALUES FROM ('2999-01-01') TO ('3000-01-01');
        CREATE TABLE public.events_default PARTITION OF public.events DEFAULT;
        INSERT INTO public.events VALUES (1, '2020-05-01'), (2, '1999-01-01'), (3, '1998-01-01');
        ANALYZE public.events;
    """)


def test_status_reports_partitions_and_default_rows(pg, db, conn):
    _partitioned_table(conn)
    tables = [{"table": "public.events", "partition_key": "at", "strategy": "range", "interval": "yearly",
               "premake": 3}]
    run = run_playbook("status", pg, db, tables)
    assert not run.failed, run
    assert run.changed == 0, run
    text = " ".join(run.output.split())              # the console wraps long lines
    assert "public.events: not managed" in text
    assert "3 partitions" in text
    assert "2 rows in the default partition events_default" in text, text
    assert "only 1 future partitions ready (premake 3)" in text
    # no partition holds now (2020, then 2999): new rows land in the default partition
    assert "verdict CRITICAL" in text and "CRITICAL no partition holds" in text


def test_status_of_an_unknown_table_is_a_clear_line(pg, db):
    run = run_playbook("status", pg, db, [{"table": "public.nothing_here"}])
    assert not run.failed, run
    assert "public.nothing_here: not managed" in run.output


def test_integer_ranges_have_no_future_to_premake(pg, db, conn):
    """A numeric width (interval: 1000000) has no 'future': no premake warning, no count."""
    conn.cursor().execute("""
        CREATE TABLE public.ledger (id bigint PRIMARY KEY) PARTITION BY RANGE (id);
        CREATE TABLE public.ledger_0 PARTITION OF public.ledger FOR VALUES FROM (0) TO (1000000);
    """)
    from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
    from ansible_collections.dbops.partitioning.plugins.module_utils.stats import Expected, all_facts
    session = Session(conn)
    facts = all_facts(session, "partitioning", ["public.ledger"], {"public.ledger": Expected(premake=4)})[0]
    assert facts["future_partitions"] is None
    assert not [h for h in facts["health"] if "future partitions" in h], facts["health"]
