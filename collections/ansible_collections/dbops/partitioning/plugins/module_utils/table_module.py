# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module that works on one managed table shares: its options and its ``main()``.

A phase module declares its own options and one function ``phase(module, session, target)``;
``table_argument_spec`` adds the options every such module has (connection options,
``spec``/``table``/``state_schema``: doc fragment ``managed_table``) and ``run_table_module``
does the rest the same way for all of them: the table and its tuning resolved and validated
before any connection, the session, the operator's ``check mode:`` prefix and ``queries`` in
the result, and errors as messages (``db.run_module``).

The table's tuning comes from one place (docs/design.md, "Where defaults come from"): an option
given to the module, else the key of the table's resolved spec (what the playbooks pass), else
the default of ``spec.TUNING``. No module repeats a default of the spec in its argument spec.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from dataclasses import dataclass, field
from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dbops.partitioning.plugins.module_utils.db import (
    PartitioningError, connection_argument_spec, open_session, run_module)
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import parse_table, qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import TUNING, resolve_tuning

# The options of every module that works on one managed table (doc fragment managed_table).
TABLE_ARGUMENT_SPEC = dict(spec=dict(type="dict", default={}),
                           table=dict(type="str"),
                           state_schema=dict(type="str"))

# Knobs measured in fractions of a second or of a millisecond; every other number is whole.
FRACTIONAL_KNOBS = ("max_replica_lag_s", "max_app_latency_ms", "max_xact_age_s", "max_runtime_s")
_OPTION_TYPES = dict(bool="bool", ident="str", path="path")


def tuning_options(*names):
    """The module options that set the TUNING knobs ``names``: their types follow the knobs',
    and none has a default (the table's resolved spec gives it)."""
    out = {}
    for name in names:
        kind = TUNING[name][1]
        if isinstance(kind, tuple):
            out[name] = dict(type="str", choices=list(kind))
        else:
            out[name] = dict(type=_OPTION_TYPES.get(kind, "float" if name in FRACTIONAL_KNOBS else "int"))
    return out


# The lock options of the modules that take the table's locks (doc fragment managed_table.lock_retry).
LOCK_RETRY_OPTIONS = tuning_options("lock_timeout_ms", "swap_retries")


@dataclass
class ManagedTable:
    """The table a module works on, resolved from its options before any connection."""
    table_name: str                                         # canonical, 'public.revenues'
    state_schema: str
    tuning: Dict[str, Any] = field(default_factory=dict)   # every spec.TUNING knob


def managed_table(params, knobs=None):
    """Resolve ``params`` (a module's) into a ManagedTable.

    ``knobs`` maps module option names to the tuning knobs they set (an option of the same
    name as its knob need not be listed: every TUNING name the module has is one)."""
    raw = dict(params.get("spec") or {})
    table = params.get("table") or raw.get("table")
    if not table:
        raise PartitioningError("table is required: give table, or spec with its table.")
    table_name = qualified(*parse_table(table))
    tuning = resolve_tuning(raw)
    given = dict((name, name) for name in TUNING if name in params)
    given.update(knobs or {})
    for option, knob in given.items():
        value = params.get(option)
        if value is None:
            continue
        if not isinstance(value, bool) and isinstance(value, (int, float)) and value < 0:
            raise PartitioningError("%s must not be negative (got %s)." % (option, value))
        tuning[knob] = value
    state_schema = params.get("state_schema") or tuning["state_schema"]
    return ManagedTable(table_name=table_name, state_schema=state_schema, tuning=tuning)


def table_argument_spec(options):
    """The argument spec of a module that works on one managed table, with its own ``options``."""
    argument_spec = connection_argument_spec()
    argument_spec.update(TABLE_ARGUMENT_SPEC)
    argument_spec.update(options)
    return argument_spec


def run_table_module(name, phase, options, knobs=None, resolve=None):
    """The ``main()`` of the module ``name``: its argument spec is ``table_argument_spec(options)``;
    runs ``phase(module, session, target)`` and exits with its result.

    ``target`` is ``resolve(module.params)`` (default: the ManagedTable, with ``knobs`` mapping
    option names to the tuning knobs they set), computed before the connection so that bad
    input changes nothing."""
    resolve = resolve or (lambda params: managed_table(params, knobs))

    def work(module, state):
        target = resolve(module.params)
        session = open_session(module, state, name)
        result = phase(module, session, target)
        if module.check_mode and result.get("changed") and result.get("msg"):
            result["msg"] = "check mode: " + result["msg"]
        result["queries"] = session.queries
        return result

    module = AnsibleModule(argument_spec=table_argument_spec(options), supports_check_mode=True)
    run_module(module, work)
