"""One source of every default of a table: module_utils/spec.py (TUNING).

The playbooks resolve each spec once (validated_specs) and hand it to the modules whole; a
module on its own resolves the same defaults. What repeats a default for an operator's eyes
(docs/table-spec.md, the module docs, the example inventory) is checked against TUNING here.
"""
import ast
import collections.abc
import os
import re

import pytest
import yaml

from ansible_collections.dbops.partitioning.plugins.filter.validated_specs import validated_specs
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import (
    PLAY_VARIABLES, TUNING, playbook_defaults, resolve_tuning)
from ansible_collections.dbops.partitioning.plugins.module_utils.table_module import managed_table

from ..helpers.paths import MODULES, ROOT

RANGE = dict(table="public.revenues", partition_key="occurred_at", interval="monthly")


def shown(value):
    """A default as the docs show it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def module_docs():
    for name in sorted(os.listdir(MODULES)):
        if name.endswith(".py"):
            with open(os.path.join(MODULES, name)) as f:
                tree = ast.parse(f.read())
            for node in tree.body:
                if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "DOCUMENTATION":
                    yield name[:-3], yaml.safe_load(node.value.value)


def test_table_spec_doc_lists_every_knob_with_its_default():
    with open(os.path.join(ROOT, "docs", "table-spec.md")) as f:
        rows = dict(re.findall(r"^\| `(\w+)` \|.*\| `([^`]*)` \|$", f.read(), re.M))
    for knob, (default, _kind) in TUNING.items():
        assert rows.get(knob) == shown(default), knob


def test_the_example_inventory_shows_the_defaults():
    with open(os.path.join(ROOT, "inventories", "example-prod", "group_vars", "partitioning_hosts", "main.yml")) as f:
        shown_there = dict(re.findall(r"^# (partitioning_\w+): (\S+)", f.read(), re.M))
    assert shown_there
    for variable, value in shown_there.items():
        assert value == shown(TUNING[PLAY_VARIABLES[variable]][0]), variable


def test_no_module_option_repeats_a_default_of_the_spec():
    for module, doc in module_docs():
        for option, entry in doc.get("options", {}).items():
            if option in TUNING:
                assert "default" not in entry, "%s: %s" % (module, option)
                said = re.search(r"Default the spec's C\(%s\)[^,]*, else (?:C\()?([^.)]+)" % option,
                                 " ".join(entry["description"]))
                if said and not said.group(1).startswith("not checked"):
                    assert said.group(1) == shown(TUNING[option][0]), "%s: %s" % (module, option)


def test_a_module_option_wins_over_the_spec_which_wins_over_the_default():
    params = dict(spec=dict(RANGE, lock_timeout_ms=70, verify_batches=False), table=None, state_schema=None,
                  lock_timeout_ms=None, swap_retries=5, verify_batches=None)
    target = managed_table(params)
    assert target.table_name == "public.revenues" and target.state_schema == "partitioning"
    assert target.tuning["lock_timeout_ms"] == 70            # the spec's
    assert target.tuning["swap_retries"] == 5                # the module option's
    assert target.tuning["verify_batches"] is False           # the spec's
    assert target.tuning["batch_size"] == TUNING["batch_size"][0]


def test_a_module_called_with_a_table_alone_takes_the_spec_defaults():
    target = managed_table(dict(spec={}, table="revenues", state_schema=None, verify_batches=None))
    assert target.tuning == resolve_tuning({})
    assert target.tuning["verify_batches"] is True   # was false in batch_copy's own argument spec


@pytest.mark.parametrize("params, message", [
    (dict(spec={}, table=None), "table is required"),
    (dict(spec={}, table="t", lock_timeout_ms=-1), "lock_timeout_ms must not be negative"),
    (dict(spec=dict(RANGE, batch_size=0), table=None), "batch_size: must be an integer > 0"),
])
def test_bad_input_is_refused_before_connecting(params, message):
    with pytest.raises(PartitioningError, match=message):
        managed_table(params)


class OnlyKnobs(collections.abc.Mapping):
    """A play's variables that fail when anything but a knob is read (Ansible templates lazily)."""

    def __init__(self, values):
        self.values = values

    def __getitem__(self, key):
        if key not in PLAY_VARIABLES:
            raise AssertionError("read %s" % key)
        return self.values[key]

    def __iter__(self):
        raise AssertionError("iterated over every variable")

    def __len__(self):
        return len(self.values)


def test_the_filter_reads_only_the_plays_knobs():
    variables = OnlyKnobs(dict(partitioning_batch_size=7, partitioning_postpone=True, partitioning_premake=2))
    assert playbook_defaults(variables) == dict(batch_size=7, postpone=True, premake=2)
    spec, = validated_specs([dict(RANGE, batch_size=9)], variables)
    assert spec["batch_size"] == 9 and spec["premake"] == 2 and spec["switchover_requires_approval"] is True
    assert set(TUNING) <= set(spec), "a resolved spec carries every knob a module reads"
