"""The spec's indexes: (index_spec.py) and the lexical guard of operator-written SQL (fragments.py)."""
import json

import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.fragments import FragmentError, check_fragment
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec

BASE = dict(table="public.revenues", partition_key="occurred_at", interval="monthly")


def spec(*indexes):
    return normalize_spec(dict(BASE, indexes=list(indexes)))


def problems(*indexes):
    with pytest.raises(PartitioningError) as e:
        spec(*indexes)
    return e.value.details["problems"]


@pytest.mark.parametrize("text", [
    "lower(name)", "date_trunc('month', occurred_at AT TIME ZONE 'UTC')", "status = 'a;b'", "\"we;ird\" > 0",
    "x ~ E'\\\\d+'", "coalesce(a, (b + 1))", "note <> 'it''s'"])
def test_self_contained_fragments_pass(text):
    assert check_fragment(text) == text


@pytest.mark.parametrize("text, why", [
    ("a); DROP TABLE x; --", "closes a parenthesis"),
    ("a; DROP TABLE x", "';' is not allowed"),
    ("a -- b", "comments"),
    ("a /* b */", "comments"),
    ("$1 > 0", "'$'"),
    ("$$x$$", "'$'"),
    ("(a", "open"),
    ("'abc", "unterminated string"),
    ("\"abc", "unterminated quoted name"),
    ("x = 'a\\' ; drop table t; --'", "backslash"),
    ("x = '\\'' ; drop table t; select '", "backslash"),
    ("   ", "non-empty"),
])
def test_fragments_that_could_escape_are_refused(text, why):
    with pytest.raises(FragmentError) as e:
        check_fragment(text)
    assert why in str(e.value)


def test_an_entry_with_every_key_round_trips():
    s = spec(dict(columns=["org_id", "occurred_at DESC NULLS LAST"], include=["amount_cents"]),
             {"name": "revenues_month_idx", "columns": ["date_trunc('month', occurred_at AT TIME ZONE 'UTC')"],
              "where": "status = 'settled'", "with": {"fillfactor": 90, "deduplicate_items": True}},
             dict(columns=["occurred_at"], using="BRIN", **{"with": {"pages_per_range": 32}}))
    first, second, third = s.indexes
    assert first.name == "revenues_org_id_occurred_at_idx"
    assert [e.order for e in first.elements] == ["", "DESC NULLS LAST"]
    assert second.elements[0].expression.startswith("date_trunc(")
    assert second.with_ == {"deduplicate_items": "on", "fillfactor": "90"}
    assert third.using == "brin" and third.name == "revenues_occurred_at_idx"
    assert normalize_spec(json.loads(json.dumps(s.to_json()))) == s


def test_a_long_derived_name_stays_within_63_bytes():
    s = spec(dict(columns=["a_rather_long_column_name_number_one", "a_rather_long_column_name_number_two"]))
    assert len(s.indexes[0].name.encode()) <= 63 and s.indexes[0].name.endswith("_idx")


def test_every_problem_is_reported_at_once():
    found = problems(dict(columns=["a); drop table x; --"], using="gin", include=["b"], where="x /* y */", bogus=1),
                     "x", dict(columns=[]), dict(columns=["a"], using="hsah"),
                     dict(columns=["a DESC"], using="brin"), dict(columns=["a"], include=["lower(b)"]),
                     dict(columns=["a"], **{"with": {"fill factor": 1, "x": [1]}}),
                     dict(name="a" * 64, columns=["a"]))
    text = "\n".join(found)
    for expected in ("indexes[0].bogus: unknown key", "indexes[0].columns: the expression",
                     "indexes[0].include: PostgreSQL supports INCLUDE only", "indexes[0].where: where must not contain",
                     "indexes[1]: must be a mapping", "indexes[2].columns: is required",
                     "indexes[3].using: 'hsah' is not one of", "did you mean 'hash'?",
                     "indexes[4].columns: 'a DESC': ASC/DESC", "indexes[5].include: 'lower(b)' is not a column name",
                     "indexes[6].with: 'fill factor' is not a storage parameter", "indexes[6].with: x: [1]",
                     "indexes[7].name:"):
        assert expected in text, (expected, text)


def test_two_entries_with_one_name_are_refused():
    found = problems(dict(columns=["org_id"]), dict(columns=["org_id"], where="status = 'x'"))
    assert "indexes[1]: the name revenues_org_id_idx is also indexes[0]'s" in found[0]
