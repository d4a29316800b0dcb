import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.dbops.partitioning.plugins.filter.tables import only

TABLES = [{"table": "public.revenues"}, {"table": "expenses"}, {"table": "sales.daily"}]


def test_empty_selector_keeps_all():
    assert only(TABLES, "") == TABLES


def test_unqualified_names_mean_public():
    assert only(TABLES, "revenues,public.expenses") == [TABLES[0], TABLES[1]]


def test_other_schema():
    assert only(TABLES, "sales.daily") == [TABLES[2]]


def test_unknown_name_is_an_error():
    with pytest.raises(AnsibleFilterError, match="public.revenue,"):
        only(TABLES, "revenue")
