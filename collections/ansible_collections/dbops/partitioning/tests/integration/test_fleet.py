"""Fleet roll-outs on a three-server lab with one server stopped (docs/design.md, "Fleet roll-outs").

The servers are of every PostgreSQL version present (a mixed fleet, as fleets are). A host is one
database; the second server is stopped before a run. The playbooks' rules: the canary completes the
phase before any other host starts, a failed host stops only itself (even alone in its batch, where
Ansible itself would break the run off), partitioning_any_errors_fatal stops every other host, the
recap has one line per host and table and the run fails while a host did not get through, and a
re-run after starting the server completes it, the others reporting no change.
The decisions themselves are unit-tested in tests/unit/test_fleet.py.
"""
import os

import pytest

from lab.servers import Server, available_bindirs

from ..helpers.playbook_runner import inventory_host, run_fleet_playbook

HOSTS = ("db1", "db2", "db3")
DOWN = "db2"
DATABASE = "fleet"
TABLES = [
    dict(table="public.events", partition_key="occurred_at", strategy="range", interval="monthly", premake=1),
    dict(table="public.ledger", partition_key="account_id", strategy="hash", partitions=2),
]
NOW = {"partitioning_now": "2026-11-25T12:00:00+00:00"}
SETUP = """
CREATE TABLE public.events (id bigint GENERATED ALWAYS AS IDENTITY, occurred_at timestamptz NOT NULL,
                            amount numeric NOT NULL, PRIMARY KEY (id, occurred_at));
INSERT INTO public.events (occurred_at, amount)
     SELECT timestamptz '2026-08-01 00:00+00' + i * interval '1 hour', i FROM generate_series(1, 200) AS i;
CREATE TABLE public.ledger (account_id int NOT NULL, entry int NOT NULL, PRIMARY KEY (account_id, entry));
INSERT INTO public.ledger SELECT i % 7, i FROM generate_series(1, 100) AS i;
"""


@pytest.fixture(scope="module")
def fleet(pg_base_dir):
    """Three running servers with the same two tables in database ``fleet``."""
    bindirs = available_bindirs()
    if not bindirs:
        pytest.skip("no PostgreSQL binaries are installed")
    versions = sorted(bindirs, reverse=True)
    servers = {}
    try:
        for i, host in enumerate(HOSTS):
            version = versions[i % len(versions)]
            server = Server(bindirs[version], os.path.join(pg_base_dir, "fleet-" + host), name=host)
            servers[host] = server.init().start()
        yield servers
    finally:
        for server in servers.values():
            server.destroy()


@pytest.fixture
def fresh(fleet):
    """The fleet with the tables as the application has them (nothing of ours), every server up."""
    for server in fleet.values():
        server.start()
        conn = server.connect()
        try:
            conn.cursor().execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % DATABASE)
        finally:
            conn.close()
        server.create_database(DATABASE)
        server.psql(SETUP, dbname=DATABASE)
    yield fleet
    for server in fleet.values():
        server.start()


def inventory(servers):
    return dict((h, inventory_host(servers[h], DATABASE, TABLES)) for h in HOSTS)


def phases(server):
    conn = server.connect(DATABASE)
    try:
        cur = conn.cursor()
        cur.execute("SELECT to_regclass('partitioning.tables') IS NOT NULL")
        if not cur.fetchone()[0]:
            return {}
        cur.execute("SELECT table_name, phase FROM partitioning.tables")
        return dict(cur.fetchall())
    finally:
        conn.close()


PREPARED = {"public.events": "prepared", "public.ledger": "prepared"}


def lines_of(run, host):
    """The output's lines about ``host`` before the recap play."""
    before = run.output.split("PLAY [Recap]")[0]
    return [i for i, line in enumerate(before.splitlines()) if "[%s]" % host in line]


def test_a_failed_host_stops_only_itself_and_a_rerun_completes_it(fresh):
    fresh[DOWN].stop()
    run = run_fleet_playbook("phase1_prepare", inventory(fresh),
                             extra_vars=dict(NOW, partitioning_canary=True, partitioning_serial=1))
    assert run.rc != 0, run
    # the canary (the first host) completed before any other host started
    assert max(lines_of(run, "db1")) < min(lines_of(run, "db2") + lines_of(run, "db3")), run
    results = run.recap_results()
    assert results[("db1", "public.events")].startswith("changed"), run
    assert results[("db3", "public.ledger")].startswith("changed"), run
    assert results[("db2", "public.events")].startswith('FAILED at "Create the partitioned twin'), run
    assert "Cannot connect to PostgreSQL" in results[("db2", "public.events")], run
    assert results[("db2", "public.ledger")] == "not started: this host failed", run
    assert run.recap_lines()[0].endswith("3 hosts, 2 completed, 1 failed (db2); canary db1"), run
    # the failed host is the one Ansible's own recap shows as failed
    assert run.recap["db2"]["failed"] == 1 and run.recap["db1"]["failed"] == run.recap["db3"]["failed"] == 0, run
    assert phases(fresh["db1"]) == phases(fresh["db3"]) == PREPARED

    fresh[DOWN].start()
    assert phases(fresh[DOWN]) == {}
    again = run_fleet_playbook("phase1_prepare", inventory(fresh),
                               extra_vars=dict(NOW, partitioning_canary=True, partitioning_serial=1))
    assert not again.failed, again
    results = again.recap_results()
    assert [results[(h, "public.events")].split()[0] for h in HOSTS] == ["ok", "changed", "ok"], again
    assert again.recap_lines()[0].endswith("3 hosts, 3 completed; canary db1"), again
    assert all(phases(s) == PREPARED for s in fresh.values())


def test_a_failed_canary_holds_every_host_and_any_errors_fatal_stops_the_rest(fresh):
    fresh[DOWN].stop()
    run = run_fleet_playbook("phase1_prepare", inventory(fresh), extra_vars=dict(NOW, partitioning_canary=DOWN))
    assert run.rc != 0, run
    results = run.recap_results()
    assert results[(DOWN, "public.events")].startswith("FAILED"), run
    for host in ("db1", "db3"):
        assert results[(host, "public.events")] == "not started: the canary db2 failed", run
    fresh[DOWN].start()
    assert phases(fresh["db1"]) == phases(fresh["db3"]) == {}, "a host after a failed canary was changed"
    assert run.recap_lines()[1:2] and run.recap_lines()[2].startswith("db2"), "the canary is not listed first"

    fresh[DOWN].stop()
    run = run_fleet_playbook("phase1_prepare", inventory(fresh),
                             extra_vars=dict(NOW, partitioning_serial=1, partitioning_any_errors_fatal=True))
    assert run.rc != 0, run
    results = run.recap_results()
    assert results[("db1", "public.events")].startswith("changed"), run
    assert results[("db3", "public.events")] == (
        "not started: db2 failed and partitioning_any_errors_fatal is set"), run
    fresh[DOWN].start()
    assert phases(fresh["db1"]) == PREPARED and phases(fresh["db3"]) == {}


def test_a_canary_given_in_the_inventory_stops_the_run_before_any_host_starts(fresh):
    hosts = inventory(fresh)
    for host in hosts.values():
        host["partitioning_canary"] = "db3"          # the play orders its hosts before it reads these
    run = run_fleet_playbook("phase1_prepare", hosts, extra_vars=NOW)
    assert run.rc != 0, run
    assert "give it as an extra variable (-e partitioning_canary=db3" in run.output, run
    assert all(phases(s) == {} for s in fresh.values())
