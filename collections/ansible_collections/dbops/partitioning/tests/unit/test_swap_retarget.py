"""matviews.retarget_definition: a deparsed query pointed at the twin keeps its column references valid."""
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover.matviews import retarget_definition

OLD, NEW = "public.revenues", "public.revenues_partitioned"


def test_unaliased_reference_gets_the_old_name_as_alias():
    d = " SELECT revenues.region, count(*) AS n\n   FROM public.revenues\n  GROUP BY revenues.region;"
    assert retarget_definition(d, OLD, NEW, "revenues") == \
        " SELECT revenues.region, count(*) AS n\n   FROM public.revenues_partitioned revenues\n  GROUP BY revenues.region;"


def test_existing_alias_is_kept():
    d = " SELECT r.region\n   FROM public.revenues r\n  WHERE r.amount > 5;"
    assert retarget_definition(d, OLD, NEW, "revenues") == " SELECT r.region\n   FROM public.revenues_partitioned r\n  WHERE r.amount > 5;"


def test_keywords_after_the_name_are_not_aliases():
    d = " SELECT region FROM public.revenues\n  WHERE amount > 5"
    assert "public.revenues_partitioned revenues\n  WHERE" in retarget_definition(d, OLD, NEW, "revenues")
    d = " SELECT a.id FROM public.revenues JOIN public.other a ON true"
    assert "public.revenues_partitioned revenues JOIN" in retarget_definition(d, OLD, NEW, "revenues")


def test_longer_names_and_other_schemas_are_left_alone():
    d = " SELECT 1 FROM public.revenues_archive x, other.revenues y, public.revenues"
    out = retarget_definition(d, OLD, NEW, "revenues")
    assert "public.revenues_archive x" in out and "other.revenues y" in out
    assert out.endswith("public.revenues_partitioned revenues")


def test_quoted_names():
    d = ' SELECT "Rev".a FROM "Fin Ops"."Rev"'
    assert retarget_definition(d, '"Fin Ops"."Rev"', '"Fin Ops"."Rev_partitioned"', '"Rev"') == \
        ' SELECT "Rev".a FROM "Fin Ops"."Rev_partitioned" "Rev"'
