"""The binary search of the sync function's partition ladder (sync_ladder._tree; no server)."""
import datetime

from ansible_collections.dbops.partitioning.plugins.module_utils.sync_ladder import _tree


def _leaves(node):
    return [node] if "part" in node else _leaves(node["below"]) + _leaves(node["above"])


def _depth(node):
    return 0 if "part" in node else 1 + max(_depth(node["below"]), _depth(node["above"]))


def _months(n):
    first = datetime.date(2024, 1, 1)
    out = []
    for i in range(n):
        lower = datetime.date(first.year + (first.month - 1 + i) // 12, (first.month - 1 + i) % 12 + 1, 1)
        upper = datetime.date(first.year + (first.month + i) // 12, (first.month + i) % 12 + 1, 1)
        out.append((lower, upper, ("public", "t_%d" % i), 1000 + i))
    return out


def test_the_ladder_keeps_the_partitions_in_order_and_is_balanced():
    for n in (1, 2, 3, 30, 128):
        tree = _tree(_months(n), "date")
        assert [leaf["part"][1] for leaf in _leaves(tree)] == ["t_%d" % i for i in range(n)]
        assert _depth(tree) == (n - 1).bit_length()


def test_each_split_is_the_lower_bound_of_the_first_partition_above_it():
    tree = _tree(_months(4), "date")
    assert repr(tree["split"]) == repr(_tree(_months(4)[2:3], "date")["lower"])
    assert "2024-03-01" in repr(tree["split"]) and "2024-02-01" in repr(tree["below"]["split"])


def test_open_bounds_are_none():
    tree = _tree([(None, 0, ("public", "low"), 1), (0, None, ("public", "high"), 2)], "bigint")
    assert tree["below"]["lower"] is None and tree["above"]["upper"] is None
    assert "0" in repr(tree["split"])
