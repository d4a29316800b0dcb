# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The table spec: what an operator writes in ``partitioning_tables``, validated.

``normalize_spec(raw, defaults)`` turns one entry of ``partitioning_tables`` into a
``TableSpec`` *before any database access*. Every problem of an entry is collected and
reported together, one line per problem, each naming the table and the key, so that an
operator fixes a spec in one round. ``validate_specs(list)`` does the same for the whole
list and refuses a table listed twice.

Raw keys (INTERFACE.md): table, partition_key, strategy, interval, premake, retention,
retention_action, inbound_foreign_keys, default_partition, partitions, values, start,
indexes (phase 4's partition-specific indexes: index_spec.py), plus per-table tuning
overrides named as the playbook variables without the ``partitioning_`` prefix
(batch_size, batch_sleep_ms, ...).

``defaults`` carries the playbook-level values: the tuning names (with or without the
``partitioning_`` prefix) and ``premake``/``retention_action``/``inbound_foreign_keys``.
Keys of ``defaults`` that are not spec keys are ignored, so a module may pass its whole
``module.params``; a ``None`` default means "not set".

This file is the one source of every default of a table: what neither the table's entry nor
the play sets comes from here (``TUNING``, ``DEFAULT_PREMAKE`` and the fallbacks in
``_collect``). Playbooks resolve every spec once (the filter ``validated_specs``, which reads
the play's ``partitioning_*`` variables through ``playbook_defaults``) and hand each module
the resolved spec; a module called on its own resolves its table's tuning with
``resolve_tuning``. Neither the playbooks nor the modules' argument specs repeat a default.

Longer than our other modules because it is the whole contract of a table spec in one place:
every key, its default and its validation, so that one reading tells what an operator may write.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import (
    derived_name, did_you_mean, parse_column, parse_table, qualified)
from ansible_collections.dbops.partitioning.plugins.module_utils.index_spec import IndexSpec, collect_indexes

STRATEGIES = ("range", "list", "hash")
INTERVALS = ("daily", "weekly", "monthly", "quarterly", "yearly")
RETENTION_ACTIONS = ("detach", "archive", "drop")
INBOUND_FK_ACTIONS = ("refuse", "drop")
MAX_HASH_PARTITIONS = 1024
DEFAULT_PREMAKE = 4
# Range partitions of one table: the spec's cap (max_partitions) and the most it may be raised to.
DEFAULT_MAX_PARTITIONS = 1000
PARTITIONS_LIMIT = 10000

# Tuning knobs: name -> (default, kind). Kinds: 'pos' integer > 0, 'nonneg' integer >= 0,
# 'limit' integer > 0 or None/0 meaning "no limit", 'ident' a schema name, 'bool' a boolean,
# 'path' a directory path or None/'' for none, a tuple: one of its values.
TUNING = {
    "batch_size": (10000, "pos"),
    "batch_sleep_ms": (0, "nonneg"),
    "batch_target_ms": (500, "pos"),
    "max_replica_lag_s": (30, "pos"),
    "lock_timeout_ms": (50, "pos"),
    "swap_retries": (30, "pos"),
    "copy_workers": (1, "pos"),
    "max_runtime_s": (None, "limit"),
    "max_active_backends": (None, "limit"),
    "max_lock_waiters": (None, "limit"),
    # the latency guard (migrate/latency.py): the application's statements may run this many ms
    # longer, and this many percent longer (100: twice as long), than without the copy; 0/null = no
    # such limit, both 0/null = off
    "max_app_latency_ms": (10, "limit"),
    "max_app_slowdown_pct": (100, "limit"),
    "state_schema": ("partitioning", "ident"),
    "archive_schema": ("partitioning_archive", "ident"),
    # phase 2 and phase 3 options a table may set for itself (playbooks/tasks/phase*_table.yml)
    "verify_batches": (True, "bool"),
    "max_xact_age_s": (60, "pos"),
    "final_check": ("full", ("full", "none")),
    "switchover_requires_approval": (False, "bool"),
    "postpone": (False, "bool"),              # the same, as gh-ost calls it
    # maintenance (module_utils/maintain/): the longest a DDL step may wait for, and hold, its
    # locks on an application table; where retention writes a pg_dump of each partition first
    "lock_budget_ms": (200, "pos"),
    "retention_dump_dir": (None, "path"),
    # guards that cannot see other roles' sessions or the replicas' lag (no pg_read_all_stats,
    # HP21): refused unless accepted here (health.py)
    "allow_blind_guards": (False, "bool"),
    # the subscribers of the table's publications accept what the migration publishes (the twin,
    # <table>_old, the state schema, partitions' names): publications.py, HP12, HP19
    "subscribers_ready": (False, "bool"),
}

# Knobs with a second name: a table's own value under either name wins over the play's, and
# both names resolve to that one value.
SYNONYMS = {"switchover_requires_approval": ("postpone",)}
_SECOND_NAMES = dict((second, first) for first, seconds in SYNONYMS.items() for second in seconds)

SPEC_KEYS = ("table", "partition_key", "strategy", "interval", "premake", "retention", "retention_action",
             "inbound_foreign_keys", "default_partition", "partitions", "values", "start", "max_partitions", "indexes")
ALL_KEYS = SPEC_KEYS + tuple(TUNING)
# Spec keys a playbook may set for every table at once.
DEFAULTABLE = ("premake", "retention_action", "inbound_foreign_keys", "max_partitions") + tuple(TUNING)
# ... as the play's variables that set them (validated_specs reads these names, and no other).
PLAY_VARIABLES = dict(("partitioning_" + key, key) for key in DEFAULTABLE + ("retention",))

_LIST_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


@dataclass
class TableSpec:
    schema: str
    name: str
    table_name: str                 # canonical display name, 'public.revenues' (state row key)
    partition_key: str
    strategy: str                   # 'range' | 'list' | 'hash'
    interval: Any = None            # range only: daily | weekly | monthly | quarterly | yearly, or an
    #                                 int width for integer keys (interval: 1000000 -> [0, 1000000), ...)
    premake: int = DEFAULT_PREMAKE  # range only: partitions kept ready beyond the current one
    start: Any = None               # range only: the first partition's period (date; int for widths); earlier
    #                                 keys go to the default partition
    max_partitions: int = DEFAULT_MAX_PARTITIONS   # range only: more partitions in the layout is refused
    partitions: Optional[int] = None        # hash only: number of partitions
    values: Dict[str, List[Any]] = field(default_factory=dict)  # list only: partition name -> values
    default_partition: bool = True
    inbound_foreign_keys: str = "refuse"
    retention: Optional[int] = None          # range only: months kept attached; None keeps all
    retention_action: str = "detach"
    tuning: Dict[str, Any] = field(default_factory=dict)
    indexes: List[IndexSpec] = field(default_factory=list)   # phase 4 builds them online

    @property
    def twin(self):
        """(schema, name) of the partitioned twin."""
        return (self.schema, derived_name(self.name, "_partitioned"))

    @property
    def old(self):
        """(schema, name) the original gets at switchover."""
        return (self.schema, derived_name(self.name, "_old"))

    @property
    def state_schema(self):
        return self.tuning["state_schema"]

    def to_json(self):
        """A JSON-able dict in the raw spec's own keys: ``normalize_spec(s.to_json()) == s``."""
        out = dict(table=self.table_name, partition_key=self.partition_key, strategy=self.strategy,
                   default_partition=self.default_partition, inbound_foreign_keys=self.inbound_foreign_keys)
        if self.strategy == "range":
            out.update(interval=self.interval, premake=self.premake, retention=self.retention,
                       retention_action=self.retention_action, max_partitions=self.max_partitions,
                       start=self.start.isoformat() if hasattr(self.start, "isoformat") else self.start)
        elif self.strategy == "hash":
            out.update(partitions=self.partitions)
        else:
            out.update(values=dict((k, list(v)) for k, v in self.values.items()))
        if self.indexes:
            out["indexes"] = [index.to_json() for index in self.indexes]
        out.update(self.tuning)
        return out


def _int(value):
    """An integer from an int or a string of digits (Ansible templating may give strings)."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError


def _bool(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError


def _is_width(value):
    """A numeric range width: a positive integer (or a string of digits)."""
    try:
        return _int(value) > 0
    except ValueError:
        return False


def _date(value):
    """A date from a date, a datetime at midnight or an ISO 'YYYY-MM-DD' string."""
    if isinstance(value, datetime.datetime):
        if value.time() != datetime.time(0):
            raise ValueError
        return value.date()
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str):
        return datetime.date.fromisoformat(value.strip())
    raise ValueError


def _list_value(value):
    """A list partition value as it goes into a literal; dates become ISO strings."""
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if value is None or isinstance(value, (dict, list, tuple, set)):
        raise ValueError
    # Plain Python types: Ansible hands over tagged subclasses of str/int.
    for plain in (bool, int, float, str):
        if isinstance(value, plain):
            return plain(value)
    raise ValueError


class _Problems:
    def __init__(self, where):
        self.where = where
        self.items = []

    def add(self, key, text):
        self.items.append("%s: %s: %s" % (self.where, key, text))


def _table_label(raw):
    table = raw.get("table") if isinstance(raw, dict) else None
    if isinstance(table, str) and table.strip():
        try:
            return qualified(*parse_table(table))
        except PartitioningError:
            return table.strip()
    return "partitioning_tables entry"


def _required_name(raw, key, parse, problems, what, shape):
    """``parse(raw[key])``, or None with the problem added: missing, not a string, or not a name."""
    value = raw.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        problems.add(key, "is required (%s)" % what)
    elif not isinstance(value, str):
        problems.add(key, "must be %s, got %r" % (shape, value))
    else:
        try:
            return parse(value)
        except PartitioningError as e:
            problems.add(key, e.msg)
    return None


def _collect(raw, defaults, problems):
    """Validate ``raw`` into the keyword arguments of TableSpec, adding to ``problems``."""
    if not isinstance(raw, dict):
        problems.add("table", "each entry must be a mapping with at least 'table' and 'partition_key', got %r"
                     % (raw,))
        return None
    defaults = _clean_defaults(defaults)
    for key in raw:
        if key in ALL_KEYS:
            continue
        bare = key[len("partitioning_"):] if isinstance(key, str) and key.startswith("partitioning_") else None
        if bare in TUNING:
            problems.add(key, "per-table tuning is written without the partitioning_ prefix: %s" % bare)
        else:
            problems.add(key, "unknown key%s (known: %s)" % (did_you_mean(key, ALL_KEYS), ", ".join(ALL_KEYS)))
    out = {}

    table = _required_name(raw, "table", parse_table, problems, "schema.table; unqualified means public",
                           "a string like public.revenues")
    if table is not None:
        out["schema"], out["name"] = table
        out["table_name"] = qualified(*table)
    key = _required_name(raw, "partition_key", parse_column, problems, "the column to partition by", "a column name")
    if key is not None:
        out["partition_key"] = key

    # strategy
    strategy = raw.get("strategy", "range")
    if strategy is None:
        strategy = "range"
    if not isinstance(strategy, str) or strategy.strip().lower() not in STRATEGIES:
        problems.add("strategy", "%r is not one of %s%s" % (strategy, ", ".join(STRATEGIES),
                                                            did_you_mean(strategy, STRATEGIES)))
        return out  # the remaining checks depend on the strategy
    strategy = strategy.strip().lower()
    out["strategy"] = strategy

    def given(k):
        return raw.get(k) is not None

    def refuse_unless(k, wanted):
        if given(k) and strategy not in wanted:
            problems.add(k, "applies only to strategy %s, not %s" % (" or ".join(wanted), strategy))

    refuse_unless("interval", ("range",))
    refuse_unless("premake", ("range",))
    refuse_unless("start", ("range",))
    refuse_unless("max_partitions", ("range",))
    refuse_unless("retention", ("range",))
    refuse_unless("partitions", ("hash",))
    refuse_unless("values", ("list",))

    if strategy == "range":
        interval = raw.get("interval")
        numeric = False
        if interval is None:
            problems.add("interval", "is required for strategy range (one of %s, or a positive integer width "
                         "for an integer key)" % ", ".join(INTERVALS))
        elif _is_width(interval):
            numeric = True
            out["interval"] = _int(interval)
        elif not isinstance(interval, str) or interval.strip().lower() not in INTERVALS:
            problems.add("interval", "%r is not one of %s (or a positive integer width for an integer key)%s"
                         % (interval, ", ".join(INTERVALS), did_you_mean(interval, INTERVALS)))
        else:
            out["interval"] = interval.strip().lower()

        premake = raw.get("premake", defaults.get("premake"))
        if premake is None:
            premake = DEFAULT_PREMAKE
        try:
            premake = _int(premake)
            if premake < 0:
                raise ValueError
            out["premake"] = premake
        except ValueError:
            problems.add("premake", "must be an integer >= 0 (future partitions kept ready), got %r" % (premake,))

        cap = raw.get("max_partitions", defaults.get("max_partitions"))
        try:
            cap = DEFAULT_MAX_PARTITIONS if cap is None else _int(cap)
            if not 1 <= cap <= PARTITIONS_LIMIT:
                raise ValueError
            out["max_partitions"] = cap
        except ValueError:
            problems.add("max_partitions", "must be an integer from 1 to %d (the most range partitions the layout "
                         "may have), got %r" % (PARTITIONS_LIMIT, cap))

        if given("start"):
            try:
                out["start"] = _int(raw["start"]) if numeric else _date(raw["start"])
            except ValueError:
                problems.add("start", "must be %s, got %r" % ("an integer (the interval is a numeric width)"
                                                              if numeric else "a date (YYYY-MM-DD)", raw["start"]))

        retention = raw.get("retention", defaults.get("retention"))
        if retention is not None and numeric:
            if given("retention"):
                problems.add("retention", "counts months: it needs a calendar interval, not a numeric width")
        elif retention is not None:
            try:
                retention = _int(retention)
                if retention <= 0:
                    raise ValueError
                out["retention"] = retention
            except ValueError:
                problems.add("retention", "must be a number of months > 0, or null to keep everything; got %r"
                             % (retention,))
    elif strategy == "hash":
        n = raw.get("partitions")
        if n is None:
            problems.add("partitions", "is required for strategy hash (2..%d)" % MAX_HASH_PARTITIONS)
        else:
            try:
                n = _int(n)
                if not 2 <= n <= MAX_HASH_PARTITIONS:
                    raise ValueError
                out["partitions"] = n
            except ValueError:
                problems.add("partitions", "must be an integer from 2 to %d, got %r" % (MAX_HASH_PARTITIONS, n))
    else:
        values = _collect_values(raw.get("values"), problems)
        if values is not None:
            out["values"] = values

    # default_partition
    default_partition = raw.get("default_partition")
    if default_partition is None:
        out["default_partition"] = strategy != "hash"
    else:
        try:
            default_partition = _bool(default_partition)
            if default_partition and strategy == "hash":
                problems.add("default_partition", "a hash-partitioned table cannot have a default partition "
                             "(every key hashes to some partition); remove it or set it to false")
            out["default_partition"] = default_partition
        except ValueError:
            problems.add("default_partition", "must be true or false, got %r" % (default_partition,))

    # enums
    for name, choices, fallback in (("retention_action", RETENTION_ACTIONS, "detach"),
                                    ("inbound_foreign_keys", INBOUND_FK_ACTIONS, "refuse")):
        value = raw.get(name, defaults.get(name))
        if value is None:
            value = fallback
        if not isinstance(value, str) or value.strip().lower() not in choices:
            problems.add(name, "%r is not one of %s%s" % (value, ", ".join(choices), did_you_mean(value, choices)))
        else:
            out[name] = value.strip().lower()

    out["indexes"] = collect_indexes(raw.get("indexes"), out.get("name", "table"), problems.add)
    out["tuning"] = _collect_tuning(raw, defaults, problems)
    return out


def _collect_tuning(raw, defaults, problems):
    """Every TUNING knob: the table's value, else the play's, else the default; validated."""
    tuning = {}
    for name, (fallback, kind) in TUNING.items():
        if name in _SECOND_NAMES:
            continue  # resolved with its first name
        names = (name,) + SYNONYMS.get(name, ())
        given = [n for n in names if n in raw] or [n for n in names if defaults.get(n) is not None] or [name]
        source = given[0]
        value = raw[source] if source in raw else defaults.get(source)
        if value is None:
            value = fallback
        try:
            value = _tuning_value(value, kind)
        except ValueError:
            expect = ("must be one of " + ", ".join(kind)) if isinstance(kind, tuple) else _TUNING_EXPECT[kind]
            problems.add(source, expect + ", got %r" % (value,))
            continue
        except PartitioningError as e:
            problems.add(source, e.msg)
            continue
        for n in names:
            tuning[n] = value
    return tuning


_TUNING_EXPECT = {
    "bool": "must be true or false",
    "pos": "must be an integer > 0",
    "nonneg": "must be an integer >= 0",
    "limit": "must be an integer > 0 (or null/0 for no limit)",
    "ident": "must be a schema name",
    "path": "must be a directory path (or empty for none)",
}


def _tuning_value(value, kind):
    if isinstance(kind, tuple):
        if not isinstance(value, str) or value.strip().lower() not in kind:
            raise ValueError
        return value.strip().lower()
    if kind == "bool":
        return _bool(value)
    if kind == "path":
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ValueError
        return str(value)
    if kind == "ident":
        if not isinstance(value, str):
            raise ValueError
        return parse_column(value)  # one identifier, case folded, length checked
    if kind == "limit" and value is None:
        return None
    value = _int(value)
    if kind == "pos" and value <= 0:
        raise ValueError
    if kind == "nonneg" and value < 0:
        raise ValueError
    if kind == "limit":
        if value < 0:
            raise ValueError
        return value or None
    return value


def _collect_values(values, problems):
    """list strategy: ``{partition_name: [value, ...]}``, non-empty and pairwise disjoint."""
    if values is None:
        problems.add("values", "is required for strategy list: a mapping of partition name to its list of values")
        return None
    if not isinstance(values, dict) or not values:
        problems.add("values", "must be a non-empty mapping of partition name to its list of values, got %r"
                     % (values,))
        return None
    out, owner = {}, {}
    for name, items in values.items():
        label = "values.%s" % (name,)
        if not isinstance(name, str) or not _LIST_NAME.match(name):
            problems.add(label, "partition names may use letters, digits and _ only")
            continue
        if name.lower() == "default":
            problems.add(label, "'default' is the default partition's name; use default_partition: true")
            continue
        if not isinstance(items, (list, tuple)):
            items = [items]
        if not items:
            problems.add(label, "needs at least one value")
            continue
        clean = []
        for item in items:
            try:
                item = _list_value(item)
            except ValueError:
                problems.add(label, "%r is not a valid value (scalars only, no null: the key must be NOT NULL)"
                             % (item,))
                continue
            seen = owner.get(_value_key(item))
            if seen is not None:
                problems.add(label, "value %r is already in partition %r (lists must be disjoint)" % (item, seen))
                continue
            owner[_value_key(item)] = name
            clean.append(item)
        out[name] = clean
    return out


def _value_key(item):
    # 1 and '1' are the same key once PostgreSQL casts them to the column's type.
    return str(item)


def _clean_defaults(defaults):
    out = {}
    for key, value in (defaults or {}).items():
        if not isinstance(key, str) or value is None:
            continue
        if key.startswith("partitioning_"):
            key = key[len("partitioning_"):]
        if key in DEFAULTABLE or key == "retention":
            out[key] = value
    return out


def playbook_defaults(variables):
    """The play's ``partitioning_*`` knobs from ``variables`` (a play's ``vars``), read by name only:
    nothing else in the mapping is looked at (or templated, when it is Ansible's lazy mapping)."""
    out = {}
    for variable, key in PLAY_VARIABLES.items():
        value = variables.get(variable)
        if value is not None:
            out[key] = value
    return out


def resolve_tuning(raw=None, defaults=None):
    """The tuning of one table, for a module called with ``table`` (and maybe a spec) rather than a
    whole resolved spec: ``raw``'s tuning keys over ``defaults`` over TUNING's defaults, validated.
    Keys of ``raw`` that are not tuning knobs are ignored."""
    raw = raw or {}
    problems = _Problems(_table_label(raw) if raw.get("table") else "tuning")
    tuning = _collect_tuning(raw, _clean_defaults(defaults), problems)
    if problems.items:
        raise _error(problems.items)
    return tuning


def normalize_spec(raw, defaults=None):
    """One entry of ``partitioning_tables`` -> TableSpec, or PartitioningError listing every problem."""
    problems = _Problems(_table_label(raw))
    out = _collect(raw, defaults, problems)
    if problems.items:
        raise _error(problems.items)
    return TableSpec(**out)


def validate_specs(raws, defaults=None):
    """Every entry -> TableSpec; all problems of all entries in one error; duplicates refused."""
    if raws is None:
        raws = []
    if not isinstance(raws, (list, tuple)):
        raise PartitioningError("partitioning_tables must be a list of table specs, got %r" % (raws,))
    specs, items, seen = [], [], {}
    for index, raw in enumerate(raws):
        problems = _Problems(_table_label(raw))
        out = _collect(raw, defaults, problems)
        if problems.items:
            items.extend(problems.items)
            continue
        spec = TableSpec(**out)
        if spec.table_name in seen:
            items.append("%s: table: listed twice (entries %d and %d); list each table once"
                         % (spec.table_name, seen[spec.table_name] + 1, index + 1))
            continue
        seen[spec.table_name] = index
        specs.append(spec)
    # A table may not be another one's twin or old name: the two migrations would fight over it.
    derived = {}
    for spec in specs:
        for role, ident in (("partitioned twin", spec.twin), ("name after switchover", spec.old)):
            derived[ident] = (spec.table_name, role)
    for spec in specs:
        other = derived.get((spec.schema, spec.name))
        if other:
            items.append("%s: table: is the %s of %s, which is also listed; partition one of them"
                         % (spec.table_name, other[1], other[0]))
    if items:
        raise _error(items)
    return specs


def _error(items):
    if len(items) == 1:
        return PartitioningError("Invalid partitioning spec: %s" % items[0], problems=items)
    return PartitioningError("Invalid partitioning spec (%d problems):\n- %s" % (len(items), "\n- ".join(items)),
                             problems=items)
