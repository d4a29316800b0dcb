"""The reckoned upper key of a plain batch on a single integer key (batch.span_upper; no server)."""
import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils.migrate.backfill import CopyContext
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate.batch import span_of, span_upper


def ctx(integer_key=True, pk_cols=("id",)):
    return CopyContext(state_schema="partitioning", table_name="public.t", src=("public", "t"),
                       dst=("public", "t_partitioned"), pk_cols=list(pk_cols), partition_key="at",
                       integer_key=integer_key)


HI = {"id": 1000000}


def test_a_steady_range_spans_as_many_keys_as_the_limit_took_before():
    # the last batch moved 20000 keys for 10000 rows: 10000 rows more take 20000 keys
    assert span_upper(ctx(), {"id": 500}, HI, 10000, (20000, 10000, 10000)) == {"id": 20500}
    # a limit halved since (the latency guard): half the keys
    assert span_upper(ctx(), {"id": 500}, HI, 5000, (20000, 10000, 10000)) == {"id": 10500}


def test_the_span_grows_at_most_twofold_and_never_past_the_range():
    assert span_upper(ctx(), {"id": 0}, HI, 1000, (1000, 500, 1000)) == {"id": 2000}
    assert span_upper(ctx(), {"id": 999000}, HI, 1000, (4000, 1000, 1000)) == HI
    assert span_upper(ctx(), {"id": 0}, {"id": 10}, 1000, (1, 1000, 1000)) == {"id": 1}


@pytest.mark.parametrize("context,lo,last", [
    pytest.param(ctx(integer_key=False), {"id": 0}, (1000, 1000, 1000), id="not-an-integer-key"),
    pytest.param(ctx(), None, (1000, 1000, 1000), id="first-batch"),
    pytest.param(ctx(), {"id": 0}, None, id="no-previous-batch"),
    pytest.param(ctx(), {"id": 0}, (100000, 499, 1000), id="a-gap-thinned-the-last-batch"),
    pytest.param(ctx(), {"id": 0}, (1000, 2001, 1000), id="denser-than-twice-the-aim"),
    pytest.param(ctx(), {"id": 0}, (1000, 0, 1000), id="empty"),
])
def test_the_bound_is_read_when_the_last_batch_was_off_its_aim(context, lo, last):
    assert span_upper(context, lo, HI, 1000, last) is None


def test_span_of_a_batch():
    res = dict(paused=False, last_key={"id": 1700}, seen=900)
    assert span_of(ctx(), {"id": 700}, res, 1000) == (1000, 900, 1000)
    assert span_of(ctx(), None, res, 1000) is None                      # the range's first batch
    assert span_of(ctx(), {"id": 700}, None, 1000) is None              # timed out
    assert span_of(ctx(), {"id": 700}, dict(res, paused=True), 1000) is None
    assert span_of(ctx(integer_key=False), {"id": 700}, res, 1000) is None
