"""The switchover's refusals, read from a captured pair alone (no server)."""
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import ForeignKey
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover import checks

from ..helpers.swap_pair import pair


def test_a_ready_pair_has_no_problem():
    p = pair()
    assert checks.bound_problems(p) == [] and checks.shape_problems(p) == [] and checks.missing_policies(p) == []


def test_functions_bound_to_the_table_or_its_views_are_named_once():
    p = pair()
    p.active.sql_functions = ["public.revenue_total()"]
    p.active.views[1].sql_functions = ["public.big_total()", "public.revenue_total()"]
    [problem] = checks.bound_problems(p)
    assert "BEGIN ATOMIC" in problem and "public.revenue_total(), public.big_total();" in problem


def test_inbound_foreign_keys_are_refused_but_a_self_reference_moves_with_the_table():
    p = pair()
    p.active.referenced_by = [
        ForeignKey(name="refunds_revenue_fk", definition="", table=("public", "refunds"), columns=["revenue_id"],
                   ref_table=("public", "revenues"), ref_columns=["id"]),
        ForeignKey(name="revenues_parent_fk", definition="", table=("public", "revenues"), columns=["parent_id"],
                   ref_table=("public", "revenues"), ref_columns=["id"])]
    [problem] = checks.bound_problems(p)
    assert "refunds_revenue_fk on public.refunds" in problem and "revenues_parent_fk" not in problem


def test_a_standby_without_primary_key_or_columns_cannot_take_the_place():
    p = pair()
    p.standby.primary_key = None
    p.standby.columns = p.standby.columns[:-1]
    assert checks.shape_problems(p) == ["revenues_partitioned has no primary key",
                                        "revenues_partitioned lacks columns of revenues: amount_cents"]


def test_missing_policies_and_publication_warnings():
    p = pair()
    p.standby.policies = []
    assert checks.missing_policies(p) == ["tenant"]
    # only a membership by name moves with the swap; FOR ALL TABLES publishes the new table itself
    assert checks.publication_warnings(p) == [
        "publication revenues_pub has publish_via_partition_root = false: subscribers will see the partitions' "
        "names (HP12)"]
