"""Spec validation: every bad spec gets one clear message naming the table and the key,
before any database access (no server needed here)."""
import datetime

import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import (
    TUNING, TableSpec, normalize_spec, validate_specs)

RANGE = dict(table="public.revenues", partition_key="occurred_at", strategy="range", interval="quarterly")
HASH = dict(table="public.daily_cash_balances", partition_key="org_id", strategy="hash", partitions=16)
LIST = dict(table="sales.orders", partition_key="region", strategy="list",
            values={"eu": ["de", "fr"], "us": ["us"]})


def problems(raw, defaults=None):
    with pytest.raises(PartitioningError) as e:
        normalize_spec(raw, defaults)
    return e.value.details["problems"]


def one_problem(raw, defaults=None):
    found = problems(raw, defaults)
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------- good specs and defaults

def test_range_defaults():
    s = normalize_spec(dict(table="revenues", partition_key="occurred_at", interval="monthly"))
    assert isinstance(s, TableSpec)
    assert (s.schema, s.name, s.table_name) == ("public", "revenues", "public.revenues")
    assert s.strategy == "range" and s.interval == "monthly"
    assert s.premake == 4 and s.default_partition is True
    assert s.inbound_foreign_keys == "refuse" and s.retention is None and s.retention_action == "detach"
    assert s.twin == ("public", "revenues_partitioned") and s.old == ("public", "revenues_old")
    assert s.tuning["batch_size"] == 10000 and s.tuning["state_schema"] == "partitioning"
    assert s.tuning["max_runtime_s"] is None
    assert set(s.tuning) == set(TUNING)


def test_hash_has_no_default_partition():
    s = normalize_spec(HASH)
    assert s.partitions == 16 and s.default_partition is False and s.interval is None


def test_list_keeps_values_and_default():
    s = normalize_spec(LIST)
    assert s.values == {"eu": ["de", "fr"], "us": ["us"]} and s.default_partition is True
    assert s.table_name == "sales.orders"


def test_quoted_names_keep_case():
    s = normalize_spec(dict(RANGE, table='"Sales"."Revenues"', partition_key='"OccurredAt"'))
    assert (s.schema, s.name, s.partition_key) == ("Sales", "Revenues", "OccurredAt")
    assert s.table_name == '"Sales"."Revenues"'
    assert s.twin == ("Sales", "Revenues_partitioned")


def test_long_name_twin_stays_within_63_bytes():
    name = "t" * 60
    s = normalize_spec(dict(RANGE, table=name))
    assert len(s.twin[1]) <= 63 and s.twin[1].endswith("_partitioned")
    assert len(s.old[1]) <= 63 and s.twin[1] != s.old[1]


def test_defaults_from_playbook_and_per_table_override():
    defaults = dict(partitioning_batch_size=500, batch_sleep_ms=5, premake=2, login_host="x",
                    partitioning_state_schema="pstate", max_lock_waiters=None)
    s = normalize_spec(dict(RANGE, batch_size=100), defaults)
    assert s.tuning["batch_size"] == 100          # per table wins
    assert s.tuning["batch_sleep_ms"] == 5        # playbook level
    assert s.tuning["state_schema"] == "pstate" and s.state_schema == "pstate"
    assert s.premake == 2
    assert s.tuning["max_lock_waiters"] is None


def test_strings_from_templating_are_accepted():
    s = normalize_spec(dict(RANGE, premake="0", default_partition="false", batch_size="2000",
                            start="2024-01-01"))
    assert s.premake == 0 and s.default_partition is False and s.tuning["batch_size"] == 2000
    assert s.start == datetime.date(2024, 1, 1)


def test_case_insensitive_enums():
    s = normalize_spec(dict(RANGE, strategy="RANGE", interval="Monthly", retention_action="Archive",
                            inbound_foreign_keys="DROP", retention=12))
    assert (s.interval, s.retention_action, s.inbound_foreign_keys, s.retention) == \
        ("monthly", "archive", "drop", 12)


def test_limits_zero_means_no_limit():
    s = normalize_spec(dict(RANGE, max_runtime_s=0, max_active_backends=50))
    assert s.tuning["max_runtime_s"] is None and s.tuning["max_active_backends"] == 50


@pytest.mark.parametrize("raw", [RANGE, HASH, LIST, dict(RANGE, start=datetime.date(2020, 2, 29), retention=6)])
def test_to_json_round_trips(raw):
    s = normalize_spec(raw)
    import json
    assert normalize_spec(json.loads(json.dumps(s.to_json()))) == s


# ---------------------------------------------------------------- one message per problem

def test_unknown_key_with_did_you_mean():
    msg = one_problem(dict(RANGE, intervall="monthly"))
    assert msg.startswith("public.revenues: intervall: unknown key") and "did you mean 'interval'" in msg


def test_unknown_tuning_key_suggests_the_knob():
    assert "did you mean 'batch_size'" in one_problem(dict(RANGE, batchsize=10))


def test_message_names_table_and_key():
    with pytest.raises(PartitioningError) as e:
        normalize_spec(dict(RANGE, interval="montly"))
    assert e.value.msg == ("Invalid partitioning spec: public.revenues: interval: 'montly' is not one of "
                           "daily, weekly, monthly, quarterly, yearly (or a positive integer width for an integer "
                           "key) (did you mean 'monthly'?)")


def test_every_problem_is_listed_at_once():
    found = problems(dict(table="public.revenues", partition_key="occurred_at", interval="hourly",
                          premake=-1, retention_action="delete", batch_size=0))
    keys = [p.split(": ")[1] for p in found]
    assert keys == ["interval", "premake", "retention_action", "batch_size"]
    with pytest.raises(PartitioningError) as e:
        normalize_spec(dict(table="public.revenues", partition_key="occurred_at", interval="hourly", premake=-1))
    assert e.value.msg.startswith("Invalid partitioning spec (2 problems):\n- public.revenues: interval:")


@pytest.mark.parametrize("raw, key, text", [
    (dict(partition_key="x", interval="daily"), "table", "is required"),
    (dict(table=5, partition_key="x", interval="daily"), "table", "must be a string"),
    (dict(table="a.b.c", partition_key="x", interval="daily"), "table", "too many parts"),
    (dict(table="x" * 64, partition_key="x", interval="daily"), "table", "longer than 63 bytes"),
    (dict(table="t", interval="daily"), "partition_key", "is required"),
    (dict(table="t", partition_key="a b", interval="daily"), "partition_key", "not a"),
    (dict(table="t", partition_key="k", strategy="rnage", interval="daily"), "strategy", "did you mean 'range'"),
    (dict(table="t", partition_key="k"), "interval", "is required for strategy range"),
    (dict(table="t", partition_key="k", interval="hourly"), "interval", "not one of"),
    (dict(RANGE, premake=-1), "premake", "integer >= 0"),
    (dict(RANGE, premake="many"), "premake", "integer >= 0"),
    (dict(RANGE, premake=True), "premake", "integer >= 0"),
    (dict(RANGE, start="last year"), "start", "must be a date"),
    (dict(RANGE, retention=0), "retention", "months > 0"),
    (dict(RANGE, retention_action="delete"), "retention_action", "not one of detach, archive, drop"),
    (dict(RANGE, inbound_foreign_keys="cascade"), "inbound_foreign_keys", "not one of refuse, drop"),
    (dict(RANGE, default_partition="maybe"), "default_partition", "true or false"),
    (dict(RANGE, interval=0), "interval", "not one of"),
    (dict(RANGE, interval=-10), "interval", "not one of"),
    (dict(RANGE, interval=1000, start="2025-01-01"), "start", "an integer (the interval is a numeric width)"),
    (dict(RANGE, interval=1000, retention=3), "retention", "needs a calendar interval"),
    (dict(RANGE, partitions=4), "partitions", "applies only to strategy hash, not range"),
    (dict(RANGE, values={"a": [1]}), "values", "applies only to strategy list"),
    (dict(HASH, partitions=None), "partitions", "is required for strategy hash"),
    (dict(HASH, partitions=1), "partitions", "from 2 to 1024"),
    (dict(HASH, partitions=1025), "partitions", "from 2 to 1024"),
    (dict(HASH, default_partition=True), "default_partition", "cannot have a default partition"),
    (dict(HASH, interval="monthly"), "interval", "applies only to strategy range, not hash"),
    (dict(HASH, premake=2), "premake", "applies only to strategy range"),
    (dict(HASH, retention=12), "retention", "applies only to strategy range"),
    (dict(LIST, start="2024-01-01"), "start", "applies only to strategy range"),
    (dict(LIST, values=None), "values", "is required for strategy list"),
    (dict(LIST, values={}), "values", "non-empty mapping"),
    (dict(LIST, values=["de", "fr"]), "values", "non-empty mapping"),
    (dict(LIST, values={"eu": []}), "values.eu", "at least one value"),
    (dict(LIST, values={"eu": ["de"], "de": ["de"]}), "values.de", "already in partition 'eu'"),
    (dict(LIST, values={"eu": ["de", None]}), "values.eu", "no null"),
    (dict(LIST, values={"e-u": ["de"]}), "values.e-u", "letters, digits and _"),
    (dict(LIST, values={"default": ["de"]}), "values.default", "default_partition"),
    (dict(RANGE, batch_size=0), "batch_size", "integer > 0"),
    (dict(RANGE, lock_timeout_ms=-5), "lock_timeout_ms", "integer > 0"),
    (dict(RANGE, batch_sleep_ms=-1), "batch_sleep_ms", "integer >= 0"),
    (dict(RANGE, max_active_backends=-1), "max_active_backends", "no limit"),
    (dict(RANGE, swap_retries="x"), "swap_retries", "integer > 0"),
    (dict(RANGE, state_schema="a.b"), "state_schema", "single column name"),
    (dict(RANGE, state_schema=3), "state_schema", "schema name"),
])
def test_bad_spec(raw, key, text):
    msg = one_problem(raw)
    where, got_key, rest = msg.split(": ", 2)
    assert got_key == key, msg
    assert text in rest, msg
    if isinstance(raw.get("table"), str) and raw["table"] in ("public.revenues", "t"):
        assert where in ("public.revenues", "public.t")


def test_not_a_mapping():
    with pytest.raises(PartitioningError, match="must be a mapping"):
        normalize_spec("public.revenues")


def test_bad_playbook_default_is_reported_for_the_table():
    msg = one_problem(RANGE, dict(partitioning_batch_size=-3))
    assert msg.startswith("public.revenues: batch_size: must be an integer > 0")


# ---------------------------------------------------------------- the list of tables

def test_validate_specs_returns_all():
    specs = validate_specs([RANGE, HASH, LIST])
    assert [s.table_name for s in specs] == ["public.revenues", "public.daily_cash_balances", "sales.orders"]


def test_duplicates_are_refused_also_when_spelled_differently():
    with pytest.raises(PartitioningError) as e:
        validate_specs([RANGE, dict(RANGE, table="revenues", interval="monthly")])
    assert e.value.details["problems"] == [
        "public.revenues: table: listed twice (entries 1 and 2); list each table once"]


def test_validate_specs_collects_problems_of_every_entry():
    with pytest.raises(PartitioningError) as e:
        validate_specs([dict(RANGE, interval="x"), HASH, dict(HASH, table="h2", partitions=0)])
    found = e.value.details["problems"]
    assert len(found) == 2
    assert found[0].startswith("public.revenues: interval:") and found[1].startswith("public.h2: partitions:")


def test_validate_specs_needs_a_list():
    with pytest.raises(PartitioningError, match="must be a list"):
        validate_specs({"table": "x"})
    assert validate_specs(None) == []


def test_numeric_width_for_integer_keys():
    s = normalize_spec(dict(table="events", partition_key="id", interval=1000000, start=0, premake=2))
    assert (s.interval, s.start, s.premake, s.retention) == (1000000, 0, 2, None)
    assert normalize_spec(s.to_json()) == s
    assert normalize_spec(dict(table="events", partition_key="id", interval="500")).interval == 500


def test_prefixed_tuning_key_in_a_table_spec():
    assert one_problem(dict(RANGE, partitioning_batch_size=10)) == (
        "public.revenues: partitioning_batch_size: per-table tuning is written without the partitioning_ prefix: "
        "batch_size")


def test_a_table_that_is_another_ones_twin_is_refused():
    with pytest.raises(PartitioningError) as e:
        validate_specs([RANGE, dict(RANGE, table="revenues_partitioned")])
    assert e.value.details["problems"] == [
        "public.revenues_partitioned: table: is the partitioned twin of public.revenues, which is also listed; "
        "partition one of them"]


# ---------------------------------------------------------------- the playbook filter

def test_validated_specs_filter():
    from ansible.errors import AnsibleFilterError

    from ansible_collections.dbops.partitioning.plugins.filter.validated_specs import validated_specs

    out = validated_specs([dict(RANGE, table="revenues"), HASH], {"partitioning_batch_size": 7})
    assert [o["table"] for o in out] == ["public.revenues", "public.daily_cash_balances"]
    assert out[0]["batch_size"] == 7 and out[1]["partitions"] == 16
    with pytest.raises(AnsibleFilterError, match=r"Invalid partitioning spec \(2 problems\)"):
        validated_specs([dict(RANGE, interval="x"), dict(HASH, partitions=1)])


def test_phase2_and_phase3_options_a_table_may_set():
    spec = normalize_spec(dict(RANGE, verify_batches="no", max_xact_age_s="30", final_check="NONE", postpone=True))
    assert spec.tuning["verify_batches"] is False and spec.tuning["max_xact_age_s"] == 30
    assert spec.tuning["final_check"] == "none" and spec.tuning["postpone"] is True
    assert spec.tuning["switchover_requires_approval"] is True  # postpone is its second name


@pytest.mark.parametrize("table, play, expected", [
    (dict(), dict(), False),
    (dict(postpone=True), dict(), True),
    (dict(), dict(partitioning_postpone=True), True),
    (dict(switchover_requires_approval=False), dict(partitioning_postpone=True), False),  # the table's own wins
    (dict(postpone=False), dict(partitioning_switchover_requires_approval=True), False),
    (dict(), dict(partitioning_switchover_requires_approval="yes"), True),
])
def test_approval_has_one_value_under_both_names(table, play, expected):
    spec = normalize_spec(dict(RANGE, **table), play)
    assert spec.tuning["switchover_requires_approval"] is spec.tuning["postpone"] is expected


@pytest.mark.parametrize("key, value, expected", [
    ("final_check", "partial", "final_check: must be one of full, none, got 'partial'"),
    ("postpone", "maybe", "postpone: must be true or false, got 'maybe'"),
    ("switchover_requires_approval", 3, "switchover_requires_approval: must be true or false, got 3"),
    ("max_xact_age_s", 0, "max_xact_age_s: must be an integer > 0, got 0"),
])
def test_phase3_options_are_checked(key, value, expected):
    assert expected in one_problem(dict(RANGE, **{key: value}))


def test_maintenance_knobs_default_and_override():
    spec = normalize_spec(dict(RANGE))
    assert spec.tuning["lock_budget_ms"] == 200 and spec.tuning["retention_dump_dir"] is None
    spec = normalize_spec(dict(RANGE, lock_budget_ms="150", retention_dump_dir="/backups/partitions"),
                          dict(partitioning_lock_budget_ms=500))
    assert spec.tuning["lock_budget_ms"] == 150 and spec.tuning["retention_dump_dir"] == "/backups/partitions"
    assert normalize_spec(dict(RANGE), dict(partitioning_lock_budget_ms=500)).tuning["lock_budget_ms"] == 500
    assert normalize_spec(dict(RANGE, retention_dump_dir="")).tuning["retention_dump_dir"] is None


@pytest.mark.parametrize("key, value, expected", [
    ("lock_budget_ms", 0, "lock_budget_ms: must be an integer > 0, got 0"),
    ("lock_budget_ms", "fast", "lock_budget_ms: must be an integer > 0, got 'fast'"),
    ("retention_dump_dir", ["/a"], "retention_dump_dir: must be a directory path (or empty for none)"),
])
def test_maintenance_knobs_are_checked(key, value, expected):
    assert expected in one_problem(dict(RANGE, **{key: value}))
