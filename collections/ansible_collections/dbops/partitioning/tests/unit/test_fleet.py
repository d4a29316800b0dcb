"""Fleet roll-outs (plugin_utils/fleet.py): the play's order and batches, when a host must stop, a
host's record and the recap; every playbook's shape. The playbooks' side is
tests/integration/test_fleet.py."""
import os

import pytest
import yaml

from ansible_collections.dbops.partitioning.plugins.plugin_utils import fleet
from ansible_collections.dbops.partitioning.plugins.plugin_utils.fleet import FleetError, record, recap, stop_reason

from ..helpers.paths import COLLECTION

HOSTS = ["db1", "db2", "db3", "db4"]


def _ran(*outcomes, state="completed", check_mode=False, canary=False):
    """A host's record after its tables gave ``outcomes``."""
    rec = record(None, "start", title="Phase 1", canary=canary, check_mode=check_mode)
    rec = record(rec, "tables", names=["public.t%d" % i for i in range(len(outcomes))])
    for i, outcome in enumerate(outcomes):
        rec = record(rec, "table", table="public.t%d" % i)
        rec = record(rec, "done", outcome=outcome)
    return record(rec, "completed") if state == "completed" else rec


def _failed(message="Cannot connect to PostgreSQL: connection refused"):
    rec = record(None, "start", title="Phase 1")
    rec = record(rec, "tables", names=["public.t0", "public.t1"])
    rec = record(rec, "table", table="public.t0")
    return record(rec, "failed", task="Create the twin", result={"failed": True, "msg": message})


# --- the play ---------------------------------------------------------------------------------

@pytest.mark.parametrize("canary, serial, hosts, batches", [
    (None, None, ["all"], ["100%"]),
    ("", "", ["all"], ["100%"]),
    ("false", 2, ["all"], [2]),
    (True, None, ["all"], [1, "100%"]),
    ("true", "25%", ["all"], [1, "25%"]),
    ("db3", "1, 50%", ["db3", "all"], [1, 1, "50%"]),
])
def test_the_canary_comes_first_in_a_batch_of_its_own(canary, serial, hosts, batches):
    play = fleet.play("all", canary, serial)
    assert (play["hosts"], play["serial"], play["canary"]) == (hosts, batches, bool(fleet.canary_setting(canary)))


@pytest.mark.parametrize("serial", [0, "0", "-1", "0%", "150%", "two", True, "1,x"])
def test_a_bad_serial_is_refused_with_the_forms_it_takes(serial):
    with pytest.raises(FleetError, match="partitioning_serial must be a number of hosts per batch"):
        fleet.play("all", None, serial)


# --- when a host stops --------------------------------------------------------------------------

def test_no_canary_no_failure_every_host_goes():
    records = dict(db1=_ran({"changed": True}))
    assert stop_reason(records, "db2", HOSTS, ["db2"]) == ""


def test_hosts_after_the_canary_wait_for_it_to_complete():
    assert stop_reason({}, "db2", HOSTS, ["db2"], canary=True) == "the canary db1 has not completed the phase"
    failed = dict(db1=_failed())
    assert stop_reason(failed, "db2", HOSTS, ["db2"], canary="true") == "the canary db1 failed"
    done = dict(db1=_ran({"changed": True}))
    assert stop_reason(done, "db2", HOSTS, ["db2", "db3"], canary=True) == ""
    # the canary itself never waits for itself
    assert stop_reason({}, "db1", HOSTS, ["db1"], canary="db1") == ""


def test_a_canary_that_did_not_finish_its_phase_holds_the_others():
    waiting = dict(db1=_ran({"phase": "verified", "complete": False, "result": "waiting for approval"}))
    assert stop_reason(waiting, "db2", HOSTS, ["db2"], canary="db1") == (
        "the canary db1 has not completed the phase (public.t0: waiting for approval)")


def test_a_check_run_of_the_canary_lets_the_others_be_checked():
    checked = dict(db1=_ran({"phase": "copying", "complete": False, "changed": True}, check_mode=True))
    assert stop_reason(checked, "db2", HOSTS, ["db2"], canary=True) == ""


@pytest.mark.parametrize("canary, play_hosts, batch, pattern_hosts, message", [
    ("db9", HOSTS, ["db1"], HOSTS, "is not one of the hosts this playbook runs on"),
    ("db2", ["db1", "db3"], ["db1"], HOSTS, "is not among this run's hosts"),
    # set in the inventory: the play neither put it first nor alone in its batch
    ("db2", HOSTS, HOSTS, HOSTS, "give it as an extra variable"),
    (True, HOSTS, HOSTS, HOSTS, "give it as an extra variable"),
])
def test_a_canary_the_play_did_not_honour_stops_the_run(canary, play_hosts, batch, pattern_hosts, message):
    with pytest.raises(FleetError, match=message):
        stop_reason({}, play_hosts[0], play_hosts, batch, pattern_hosts, canary=canary)


def test_a_failed_host_stops_only_itself_by_default():
    records = dict(db1=_failed(), db2=_failed())
    assert stop_reason(records, "db3", HOSTS, ["db3"]) == ""


def test_any_errors_fatal_stops_every_other_host():
    records = dict(db2=_failed())
    assert stop_reason(records, "db3", HOSTS, ["db3"], any_errors_fatal="true") == (
        "db2 failed and partitioning_any_errors_fatal is set")
    assert stop_reason(records, "db3", HOSTS, ["db3"], any_errors_fatal=False) == ""


def test_max_fail_percentage_counts_the_play_hosts_that_failed():
    one = dict(db1=_failed())
    assert stop_reason(one, "db3", HOSTS, ["db3"], max_fail_percentage=25) == ""          # 25 % is not more than 25
    assert stop_reason(one, "db3", HOSTS, ["db3"], max_fail_percentage="20%") == (
        "1 of 4 hosts failed (db1), more than partitioning_max_fail_percentage (20%)")
    assert stop_reason(one, "db3", HOSTS, ["db3"], max_fail_percentage=0) != ""
    assert stop_reason(one, "db3", HOSTS, ["db3"], max_fail_percentage="") == ""


@pytest.mark.parametrize("value", [-1, 101, "lots", True])
def test_a_bad_percentage_is_refused(value):
    with pytest.raises(FleetError, match="partitioning_max_fail_percentage must be a percentage"):
        stop_reason(dict(db1=_failed()), "db3", HOSTS, ["db3"], max_fail_percentage=value)


# --- records and the recap ----------------------------------------------------------------------

def test_a_record_times_each_table_and_names_its_result():
    rec = _ran({"phase": "prepared", "changed": True, "detail": "8 partitions"}, {"phase": "prepared", "rows": 5})
    assert rec["state"] == "completed"
    first, second = rec["results"]
    assert (first["table"], first["phase"], first["result"], first["detail"]) == ("public.t0", "prepared", "changed",
                                                                                  "8 partitions")
    assert (second["result"], second["rows"]) == ("ok", 5)
    assert first["seconds"] >= 0
    assert _ran({"changed": True}, check_mode=True)["results"][0]["result"] == "would change"


def test_a_failure_names_the_task_and_the_message_also_of_a_loop_item():
    rec = record(record(None, "start"), "table", table="public.t0")
    loop = {"failed": True, "msg": "One or more items failed",
            "results": [{"failed": False}, {"failed": True, "msg": "lock not granted\n  after 5 attempts"}]}
    rec = record(rec, "failed", task="Copy", result=loop)
    assert rec["state"] == "failed"
    assert rec["reason"] == 'at "Copy": lock not granted after 5 attempts'
    assert rec["results"][-1]["result"] == "FAILED"


def test_the_recap_has_a_line_per_host_and_table_and_names_who_did_not_get_through():
    records = dict(db1=_ran({"phase": "prepared", "changed": True}, {"phase": "prepared"}, canary=True),
                   db2=_failed(),
                   db3=record(None, "start", title="Phase 1", stop="the canary db1 failed"),
                   db4=record(record(None, "start"), "table", table="public.t0"))
    out = recap(records, HOSTS, selected=dict(db3=["public.t0", "public.t1"]))
    assert out["lines"][0] == ("Phase 1: 4 hosts, 1 completed, 1 failed (db2), 1 stopped (db3), 1 interrupted (db4); "
                               "canary db1")
    assert out["lines"][1].split() == ["host", "table", "phase", "rows", "duration", "result"]
    body = [line.split(None, 5) for line in out["lines"][2:]]
    assert [(b[0], b[1], b[5]) for b in body] == [
        ("db1", "public.t0", "changed"),
        ("db1", "public.t1", "ok"),
        ("db2", "public.t0", 'FAILED at "Create the twin": Cannot connect to PostgreSQL: connection refused'),
        ("db2", "public.t1", "not started: this host failed"),
        ("db3", "public.t0", "not started: the canary db1 failed"),
        ("db3", "public.t1", "not started: the canary db1 failed"),
        ("db4", "public.t0", "interrupted during public.t0 (unreachable, or the run was stopped)"),
    ]
    assert (out["failed"], out["stopped"], out["interrupted"], out["completed"], out["ok"]) == (
        ["db2"], ["db3"], ["db4"], ["db1"], False)
    assert out["reasons"]["db3"] == "not started: the canary db1 failed"
    assert recap(dict(db1=_ran({})), ["db1"])["ok"]


def test_a_host_stopped_between_tables_lists_what_it_did_and_what_it_left():
    rec = _ran({"phase": "prepared", "rows": 1234567}, state="running")
    rec = record(rec, "table", table="public.t1", stop="db2 failed and partitioning_any_errors_fatal is set")
    rec["tables"] = ["public.t0", "public.t1"]
    out = recap(dict(db1=rec), ["db1"])
    assert "1,234,567" in out["lines"][2]
    assert out["lines"][3].endswith("not started: db2 failed and partitioning_any_errors_fatal is set")
    assert out["reasons"]["db1"] == "stopped before public.t1: db2 failed and partitioning_any_errors_fatal is set"


def test_a_host_that_failed_before_its_first_table_reports_it_on_that_table():
    rec = record(record(None, "start"), "tables", names=["public.t0", "public.t1"])
    rec = record(rec, "failed", task="Install the functions", result={"msg": "permission denied"})
    out = recap(dict(db1=rec), ["db1"])
    assert [line.split(None, 5)[5] for line in out["lines"][2:]] == [
        'FAILED at "Install the functions": permission denied', "not started: this host failed"]
    # its tables unknown (the spec was refused): one line for the host
    rec = record(record(None, "start"), "failed", task="Resolve the table specs", result={"msg": "bad spec"})
    assert recap(dict(db1=rec), ["db1"])["lines"][2].split(None, 5)[1:] == [
        "-", "-", "-", "-", 'FAILED at "Resolve the table specs": bad spec']


# --- every playbook has the fleet's shape (playbooks/README.md) ---------------------------------

PLAYBOOKS = os.path.join(COLLECTION, "playbooks")


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(PLAYBOOKS) if n.endswith(".yml") and n != "recap.yml"))
def test_every_playbook_rolls_out_under_the_fleet_rules_and_ends_with_the_recap(name):
    with open(os.path.join(PLAYBOOKS, name)) as f:
        plays = yaml.safe_load(f)
    work, last = plays[0], plays[-1]
    shape = "playbooks/README.md shows the shape every playbook takes"
    assert work["hosts"] == "{{ partitioning_fleet_play.hosts }}", shape
    assert work["serial"] == "{{ partitioning_fleet_play.serial }}", shape
    assert "vars/fleet.yml" in work["vars_files"], shape
    assert [t["ansible.builtin.include_tasks"] for t in work["tasks"]] == ["tasks/fleet_host.yml"], shape
    table_tasks = work["tasks"][0]["vars"]["partitioning_table_tasks"]
    with open(os.path.join(PLAYBOOKS, "tasks", table_tasks)) as f:
        assert "partitioning_outcome:" in f.read(), "%s must end by setting partitioning_outcome" % table_tasks
    assert last == {"name": "Recap", "ansible.builtin.import_playbook": "recap.yml"}, shape
