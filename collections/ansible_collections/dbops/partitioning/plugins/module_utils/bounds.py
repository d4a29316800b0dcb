# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Partition bounds and names, computed in Python (design.md, HP13).

Range partitions start at exact calendar edges: midnight of a day, the Monday of an ISO
week, the first of a month, of a quarter (Jan/Apr/Jul/Oct) or of a year. All arithmetic
is on naive dates; a ``timestamptz`` bound is the UTC instant of that midnight, written
with an explicit ``+00`` offset, so no bound ever depends on the server's or the
session's ``TimeZone`` (and daylight saving time never shifts one). Sessions run with
``TimeZone=UTC`` anyway (db.py).

``Partition.lower``/``upper`` are Python values of the key's kind: ``datetime.date``
for ``date`` keys, naive ``datetime`` for ``timestamp``, UTC-aware ``datetime`` for
``timestamptz`` — usable directly as query parameters and comparable with the values
psycopg2 returns for that column.

Names: ``<table>_<suffix>`` via ``identifiers.derived_name`` (<= 63 bytes):
``_2025_01_15`` daily, ``_2025_w03`` weekly (ISO year and week), ``_2025_01`` monthly,
``_2025_q1`` quarterly, ``_2025`` yearly, ``_1000000`` (``_m1000000`` below 0) for an integer
key by a numeric width, ``_p00``.. hash (zero-padded to the width of
N-1, at least 2), ``_<name>`` list, ``_default``.

Longer than our other modules because it is the one home of partition arithmetic for every
strategy (calendar and numeric ranges, hash, list) and of the plans built from it (phase 1's
layout, premake, retention): splitting it would put the edge rules of one range in two files.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import re
from dataclasses import dataclass, field
from typing import Any, List, Optional

from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import partitions_of
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import derived_name
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import PARTITIONS_LIMIT

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None

MAX_PARTITIONS = PARTITIONS_LIMIT
RANGE_KEY_KINDS = ("date", "timestamp", "timestamptz")
# Integer keys are range-partitioned by a numeric width (``interval: 1000000``).
INTEGER_KINDS = ("smallint", "integer", "bigint")
_INT_LIMITS = {"smallint": (-2 ** 15, 2 ** 15 - 1), "integer": (-2 ** 31, 2 ** 31 - 1),
               "bigint": (-2 ** 63, 2 ** 63 - 1)}

# key kind -> the cast written after a bound literal. A fixed list: no type name read from
# the catalog is ever printed into SQL.
_CASTS = {
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "smallint": "smallint",
    "integer": "integer",
    "bigint": "bigint",
    "text": "text",
    "varchar": "varchar",
    "uuid": "uuid",
    "boolean": "boolean",
}

_TYPE_ALIASES = {
    "date": "date",
    "timestamp": "timestamp",
    "timestamp without time zone": "timestamp",
    "timestamptz": "timestamptz",
    "timestamp with time zone": "timestamptz",
    "smallint": "smallint", "int2": "smallint",
    "integer": "integer", "int": "integer", "int4": "integer",
    "bigint": "bigint", "int8": "bigint",
    "text": "text",
    "character varying": "varchar", "varchar": "varchar",
    "uuid": "uuid",
    "boolean": "boolean", "bool": "boolean",
}

UTC = datetime.timezone.utc


@dataclass
class Partition:
    name: str
    suffix: str
    kind: str                      # 'range' | 'hash' | 'list' | 'default'
    lower: Any = None              # range: inclusive lower bound (see module docstring)
    upper: Any = None              # range: exclusive upper bound
    modulus: Optional[int] = None  # hash
    remainder: Optional[int] = None
    values: List[Any] = field(default_factory=list)  # list

    def as_dict(self):
        """JSON-able form for module results and the state schema."""
        out = dict(name=self.name, suffix=self.suffix, kind=self.kind)
        if self.kind == "range":
            out.update(lower=_iso(self.lower), upper=_iso(self.upper))
        elif self.kind == "hash":
            out.update(modulus=self.modulus, remainder=self.remainder)
        elif self.kind == "list":
            out.update(values=list(self.values))
        return out


def _iso(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


def key_kind(key_type):
    """``format_type`` text -> 'date' | 'timestamp' | 'timestamptz' | 'integer' | ... or None.

    Type modifiers are ignored: ``timestamp(3) with time zone`` is 'timestamptz'.
    """
    if not key_type:
        return None
    text = re.sub(r"\(\s*\d+(\s*,\s*\d+)?\s*\)", "", str(key_type).strip().lower())
    text = re.sub(r"\s+", " ", text).strip()
    if text.startswith("pg_catalog."):
        text = text[len("pg_catalog."):]
    return _TYPE_ALIASES.get(text)


def is_width(interval):
    """True for a numeric range width (integer keys), False for a calendar interval."""
    return isinstance(interval, int) and not isinstance(interval, bool)


def range_key_kind(key_type, interval=None):
    """The kind of a key type that range partitioning by ``interval`` supports, or None.

    Calendar intervals (and ``interval=None``) take date/timestamp/timestamptz keys; a
    numeric width takes smallint/integer/bigint keys.
    """
    kind = key_kind(key_type)
    wanted = INTEGER_KINDS if is_width(interval) else RANGE_KEY_KINDS
    return kind if kind in wanted else None


def _range_key_error(spec, key_type):
    if is_width(spec.interval):
        return PartitioningError("%s: a numeric interval (%d) needs a smallint, integer or bigint key; %s is %s."
                                 % (spec.table_name, spec.interval, spec.partition_key, key_type))
    return PartitioningError("%s: range partitioning by a calendar interval needs a date, timestamp or "
                             "timestamptz key; %s is %s (use a numeric interval for integer keys)."
                             % (spec.table_name, spec.partition_key, key_type))


# --------------------------------------------------------------------------- calendar

def parse_now(text):
    """A module's ``now`` option (ISO 8601; a naive one is UTC) as an aware datetime; None: now."""
    if not text:
        return None
    try:
        value = datetime.datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise PartitioningError("now must be an ISO 8601 timestamp (2025-06-01T00:00:00+00:00), got %r." % (text,))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _as_date(value):
    """Date of a date/datetime value; aware datetimes are taken as their UTC instant."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.date()
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str):
        return _as_date(datetime.datetime.fromisoformat(value.strip()))
    raise PartitioningError("%r is not a date or a timestamp." % (value,))


def _as_int(value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise PartitioningError("%r is not an integer key value." % (value,))
    return value


def _check_interval(interval):
    if is_width(interval) and interval > 0:
        return
    if interval not in ("daily", "weekly", "monthly", "quarterly", "yearly"):
        raise PartitioningError("Unknown interval %r." % (interval,))


def floor_boundary(value, interval):
    """The first day (a ``date``) of the ``interval`` period that contains ``value``.

    ``value`` is a date, a naive timestamp or an aware timestamp (taken in UTC). A
    timestamp exactly at midnight belongs to the period that starts there.
    """
    _check_interval(interval)
    if is_width(interval):
        return _as_int(value) // interval * interval   # floor division: -1 -> -interval
    d = _as_date(value)
    if interval == "daily":
        return d
    if interval == "weekly":
        return d - datetime.timedelta(days=d.isoweekday() - 1)
    if interval == "monthly":
        return d.replace(day=1)
    if interval == "quarterly":
        return datetime.date(d.year, 3 * ((d.month - 1) // 3) + 1, 1)
    return datetime.date(d.year, 1, 1)


def next_boundary(boundary, interval):
    """The boundary after ``boundary`` (which must itself be a boundary of ``interval``)."""
    _check_interval(interval)
    if is_width(interval):
        return _as_int(boundary) + interval
    d = _as_date(boundary)
    if interval == "daily":
        return d + datetime.timedelta(days=1)
    if interval == "weekly":
        return d + datetime.timedelta(days=7)
    if interval == "yearly":
        return datetime.date(d.year + 1, 1, 1)
    months = 1 if interval == "monthly" else 3
    m = d.month - 1 + months
    return datetime.date(d.year + m // 12, m % 12 + 1, 1)


def suffix_for(boundary, interval):
    """Suffix of the range partition that starts at ``boundary``."""
    _check_interval(interval)
    if is_width(interval):
        b = _as_int(boundary)
        return "%d" % b if b >= 0 else "m%d" % -b      # revenues_1000000, revenues_m1000000
    d = _as_date(boundary)
    if interval == "daily":
        return "%04d_%02d_%02d" % (d.year, d.month, d.day)
    if interval == "weekly":
        iso_year, week, _unused = d.isocalendar()
        return "%04d_w%02d" % (iso_year, week)
    if interval == "monthly":
        return "%04d_%02d" % (d.year, d.month)
    if interval == "quarterly":
        return "%04d_q%d" % (d.year, (d.month - 1) // 3 + 1)
    return "%04d" % d.year


def bound_value(boundary, kind):
    """A boundary as the Python value of the key's kind (None: beyond the type's range,
    written MINVALUE/MAXVALUE)."""
    if kind in INTEGER_KINDS:
        lo, hi = _INT_LIMITS[kind]
        return boundary if lo <= boundary <= hi else None
    if kind == "date":
        return boundary
    midnight = datetime.datetime(boundary.year, boundary.month, boundary.day)
    if kind == "timestamptz":
        return midnight.replace(tzinfo=UTC)
    return midnight


# --------------------------------------------------------------------------- planning

def partition_name(table_name, suffix):
    return derived_name(table_name, "_" + suffix)


def _default_partition(spec):
    return Partition(name=partition_name(spec.name, "default"), suffix="default", kind="default")


def range_partition(spec, boundary, kind):
    """The range partition of ``spec`` starting at ``boundary`` (a date on the interval's edge).
    A calendar period whose end Python cannot write (after 9999-12-31) ends at MAXVALUE."""
    suffix = suffix_for(boundary, spec.interval)
    upper = _next_or_none(boundary, spec.interval)
    return Partition(name=partition_name(spec.name, suffix), suffix=suffix, kind="range",
                     lower=bound_value(boundary, kind), upper=None if upper is None else bound_value(upper, kind))


def _next_or_none(boundary, interval):
    """``next_boundary``; None past the last date ``datetime.date`` holds (9999-12-31)."""
    try:
        return next_boundary(boundary, interval)
    except (ValueError, OverflowError):
        return None


def plan_range(spec, key_type, first, last_exclusive):
    """Range partitions of ``spec`` from the period containing ``first`` up to ``last_exclusive``
    (None: through the last period, which ends at MAXVALUE)."""
    kind = range_key_kind(key_type, spec.interval)
    if kind is None:
        raise _range_key_error(spec, key_type)
    b = floor_boundary(first, spec.interval)
    end = last_exclusive if last_exclusive is None or is_width(spec.interval) else _as_date(last_exclusive)
    out = []
    while b is not None and (end is None or b < end) and (not out or out[-1].upper is not None):
        if len(out) >= MAX_PARTITIONS:
            raise PartitioningError("%s: more than %d %s partitions from %s; choose a longer interval or a later "
                                    "start." % (spec.table_name, MAX_PARTITIONS, spec.interval,
                                                floor_boundary(first, spec.interval)))
        out.append(range_partition(spec, b, kind))
        b = _next_or_none(b, spec.interval)
    return out


@dataclass
class Layout:
    """The span of a range table's partitions (docs/table-spec.md, "Partition names and bounds"):
    boundaries ``first`` (inclusive) to ``end`` (exclusive; None: through MAXVALUE), dates or
    integers. ``source`` says what chose ``first``: 'start' (the spec), 'min(key)' (the earliest
    row), 'now' (an empty table, or rows only from the current period on). Keys outside the span go
    to the default partition."""
    first: Any
    end: Any
    source: str
    count: int

    def describe(self):
        """The layout as the modules return it (``first``, ``end``, ``partitions``, ``starts_at``)."""
        return dict(first=show_key(self.first), end=show_key(self.end), partitions=self.count, starts_at=self.source)

    def bounds(self, kind):
        """``(lower, upper)`` as values of the key's kind (``bound_value``); None: unbounded."""
        lower = bound_value(self.first, kind)
        return lower, None if self.end is None else bound_value(self.end, kind)


def range_layout(spec, min_value, max_value, now):
    """The Layout of ``spec`` (strategy range) for a table whose finite keys run from
    ``min_value`` to ``max_value`` (None: no rows), at ``now``.

    Calendar intervals: from ``start`` (earlier or later than the rows), else from the period of
    the earliest key when it is before now, else from now; through ``premake`` periods after the
    current one (or after ``start``'s, when that is later). A later key does not widen it: a row
    dated 2099 or 9999-12-31, or ``infinity``, waits in the default partition (maintenance moves
    rows out when premake reaches their period). Integer widths (no "now"): from ``start``, else
    from the width of the earliest key (0 for an empty table), through ``premake`` widths after the
    one holding the largest key. Without a default partition (``default_partition: false``) every
    key needs a partition, so the span is widened to hold the earliest and the latest key.
    More than ``max_partitions`` partitions is refused, naming what set the span."""
    interval = spec.interval
    if spec.start is not None:
        first, source = floor_boundary(spec.start, interval), "start"
    elif is_width(interval):
        first, source = (floor_boundary(min_value, interval), "min(key)") if min_value is not None else (0, "now")
    elif min_value is not None and floor_boundary(min_value, interval) < floor_boundary(now, interval):
        first, source = floor_boundary(min_value, interval), "min(key)"
    else:
        first, source = floor_boundary(now, interval), "now"
    if is_width(interval):
        top = floor_boundary(max(max_value, first), interval) if max_value is not None else first
        end = top + (spec.premake + 1) * interval
    else:
        end = max(first, floor_boundary(now, interval))
        for _period in range(spec.premake + 1):
            end = _next_or_none(end, interval) if end is not None else None
    widened = []
    if not spec.default_partition and min_value is not None:
        if floor_boundary(min_value, interval) < first:
            first = floor_boundary(min_value, interval)
            widened.append("the earliest key %s" % show_key(min_value))
        if max_value is not None and end is not None and floor_boundary(max_value, interval) >= end:
            end = _next_or_none(floor_boundary(max_value, interval), interval)
            widened.append("the latest key %s" % show_key(max_value))
    count = _count(first, end, interval)
    if count > spec.max_partitions:
        why = {"start": "start %s" % show_key(spec.start),
               "min(key)": "the earliest key, %s" % show_key(min_value),
               "now": "the current period"}[source]
        if widened:
            why += "; without a default partition the span must also hold %s" % " and ".join(widened)
            fix = "Keep default_partition: true (keys outside the layout then wait there)"
        else:
            fix = "Set start: to the first period to partition (earlier keys then go to the default partition)"
        raise PartitioningError(
            "%s: the %s from %s to %s would be %d, more than max_partitions (%d): the span starts at %s. %s, choose "
            "a longer interval, or raise max_partitions (at most %d)."
            % (spec.table_name, "partitions of width %d" % interval if is_width(interval) else "%s partitions" % interval,
               show_key(first), show_key(end), count, spec.max_partitions, why, fix,
               MAX_PARTITIONS))
    return Layout(first=first, end=end, source=source, count=count)


def sparse_start(spec, layout, bulk_from):
    """When the layout starts at a few early rows: ``(suggested start, periods before it)`` if the
    rows' bulk (``bulk_from``: the key below which about 1% of the rows lie) begins at least 12
    periods and half the layout after the layout's first period, else None."""
    if layout.source != "min(key)" or bulk_from is None or bulk_from in (datetime.datetime.max, datetime.date.max):
        return None
    bulk = floor_boundary(bulk_from, spec.interval)
    if bulk <= layout.first:
        return None
    periods = _count(layout.first, bulk, spec.interval)
    return (bulk, periods) if periods >= max(12, layout.count // 2) else None


def _count(first, end, interval):
    """How many periods of ``interval`` lie in [first, end) (None: through 9999), counted, not listed."""
    if is_width(interval):
        return (end - first) // interval
    a = _as_date(first)
    if end is None:
        return _count(first, datetime.date(9999, 12, 31), interval) + 1
    b = _as_date(end)
    months = (b.year - a.year) * 12 + b.month - a.month
    return {"daily": (b - a).days, "weekly": (b - a).days // 7, "monthly": months,
            "quarterly": months // 3, "yearly": b.year - a.year}[interval]


def plan_partitions(spec, key_type, min_value, max_value, now):
    """Every partition the twin of ``spec`` should have (the default partition last).

    range: the partitions of ``range_layout`` (``min_value``/``max_value`` are the table's
    earliest and latest finite keys, None for an empty table). hash: ``spec.partitions``
    partitions p00..; list: one per ``spec.values`` entry.
    """
    if now is None:
        now = datetime.datetime.now(UTC)
    out = []
    if spec.strategy == "range":
        if range_key_kind(key_type, spec.interval) is None:
            raise _range_key_error(spec, key_type)
        layout = range_layout(spec, min_value, max_value, now)
        out = plan_range(spec, key_type, layout.first, layout.end)
    elif spec.strategy == "hash":
        n = spec.partitions
        width = max(2, len(str(n - 1)))
        for r in range(n):
            suffix = "p%0*d" % (width, r)
            out.append(Partition(name=partition_name(spec.name, suffix), suffix=suffix, kind="hash",
                                 modulus=n, remainder=r))
    elif spec.strategy == "list":
        for value_name, values in spec.values.items():
            out.append(Partition(name=partition_name(spec.name, value_name), suffix=value_name, kind="list",
                                 values=list(values)))
    else:
        raise PartitioningError("Unknown strategy %r." % (spec.strategy,))
    if spec.default_partition and spec.strategy != "hash":
        out.append(_default_partition(spec))
    _check_unique_names(spec, out)
    return out


def _check_unique_names(spec, partitions):
    names = {}
    for p in partitions:
        if p.name in names:
            raise PartitioningError("%s: partitions %r and %r would both be named %s."
                                    % (spec.table_name, names[p.name], p.suffix, p.name))
        names[p.name] = p.suffix


# --------------------------------------------------------------------------- SQL

def bound_text(value, key_type):
    """A bound value as the key's literal spells it, before the cast: ``2025-04-01`` (date),
    ``2025-04-01 00:00:00`` (timestamp), ``2025-04-01 00:00:00+00`` (timestamptz: the UTC instant);
    other values as they are (the maintenance functions take bounds in this form)."""
    kind = key_kind(key_type)
    if isinstance(value, datetime.datetime):
        if kind == "timestamptz" or value.tzinfo is not None:
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            value = value.astimezone(UTC)
            return value.strftime("%Y-%m-%d %H:%M:%S.%f" if value.microsecond else "%Y-%m-%d %H:%M:%S") + "+00"
        return value.strftime("%Y-%m-%d %H:%M:%S.%f" if value.microsecond else "%Y-%m-%d %H:%M:%S")
    if isinstance(value, datetime.date):
        if kind in ("timestamp", "timestamptz"):
            return bound_text(bound_value(value, kind), key_type)
        return value.isoformat()
    return value


def literal(value, key_type):
    """A typed literal for a bound: ``'2025-01-01'::date``; the cast only for known kinds."""
    kind = key_kind(key_type)
    value = bound_text(value, key_type)
    lit = sql.Literal(value)
    if kind in _CASTS and not isinstance(value, bool):
        return sql.SQL("{}::{}").format(lit, sql.SQL(_CASTS[kind]))
    return lit


def bound_clause(partition, key_type):
    """``FOR VALUES ...`` / ``DEFAULT`` of a partition, as a psycopg2 composable."""
    if partition.kind == "range":
        lower = sql.SQL("MINVALUE") if partition.lower is None else literal(partition.lower, key_type)
        upper = sql.SQL("MAXVALUE") if partition.upper is None else literal(partition.upper, key_type)
        return sql.SQL("FOR VALUES FROM ({}) TO ({})").format(lower, upper)
    if partition.kind == "hash":
        return sql.SQL("FOR VALUES WITH (MODULUS {}, REMAINDER {})").format(
            sql.Literal(int(partition.modulus)), sql.Literal(int(partition.remainder)))
    if partition.kind == "list":
        return sql.SQL("FOR VALUES IN ({})").format(
            sql.SQL(", ").join(literal(v, key_type) for v in partition.values))
    if partition.kind == "default":
        return sql.SQL("DEFAULT")
    raise PartitioningError("Unknown partition kind %r." % (partition.kind,))


# --------------------------------------------------------------------------- existing partitions

_RANGE_BOUND = re.compile(r"^FOR VALUES FROM \((.*)\) TO \((.*)\)$", re.S)
_HASH_BOUND = re.compile(r"^FOR VALUES WITH \(modulus (\d+), remainder (\d+)\)$", re.I)
_LIST_BOUND = re.compile(r"^FOR VALUES IN \((.*)\)$", re.S)
_TOKEN = re.compile(r"\s*(?:'((?:[^']|'')*)'(?:::[\w\s\"]+)?|([^,]+?))\s*(?:,|$)")


def read_partitions(session, schema, name, key_type):
    """The partitions ``schema.name`` has now, as Partition objects (bounds parsed back into
    Python values of the key's kind; a range bound MINVALUE/MAXVALUE is None). Read-only."""
    return [parse_bound(name, p.name, p.bound, key_type) for p in partitions_of(session, schema, name)]


def parse_bound(table_name, partition_name_, bound, key_type):
    """``pg_get_expr(relpartbound)`` text -> Partition (single-column keys)."""
    kind = key_kind(key_type)
    prefix = table_name + "_"
    suffix = partition_name_[len(prefix):] if partition_name_.startswith(prefix) else partition_name_
    text = (bound or "").strip()
    if text == "DEFAULT":
        return Partition(name=partition_name_, suffix=suffix, kind="default")
    m = _HASH_BOUND.match(text)
    if m:
        return Partition(name=partition_name_, suffix=suffix, kind="hash", modulus=int(m.group(1)),
                         remainder=int(m.group(2)))
    m = _RANGE_BOUND.match(text)
    if m:
        lower, upper = (_tokens(g) for g in m.groups())
        if len(lower) != 1 or len(upper) != 1:
            raise PartitioningError("Partition %s has a multi-column bound (%s); only single-column partition "
                                    "keys are managed." % (partition_name_, text))
        return Partition(name=partition_name_, suffix=suffix, kind="range", lower=_value(lower[0], kind),
                         upper=_value(upper[0], kind))
    m = _LIST_BOUND.match(text)
    if m:
        return Partition(name=partition_name_, suffix=suffix, kind="list",
                         values=[_value(t, kind) for t in _tokens(m.group(1))])
    raise PartitioningError("Cannot read the bound of partition %s: %r." % (partition_name_, text))


def _tokens(text):
    """Literals of a bound list: ('quoted', True) or ('bare', False), in order."""
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise PartitioningError("Cannot read the partition bound %r." % (text,))
        if m.group(1) is not None:
            out.append((m.group(1).replace("''", "'"), True))
        else:
            out.append((m.group(2), False))
        pos = m.end()
    return out


def _value(token, kind):
    text, quoted = token
    if not quoted and text.upper() in ("MINVALUE", "MAXVALUE"):
        return None
    if not quoted and text.upper() == "NULL":
        return None
    if kind == "date":
        return datetime.date.fromisoformat(text)
    if kind == "timestamp":
        return datetime.datetime.fromisoformat(text)
    if kind == "timestamptz":
        return datetime.datetime.fromisoformat(text).astimezone(UTC)
    if kind in INTEGER_KINDS:
        return int(text)
    if kind == "boolean":
        return text.lower() == "true"
    return text


def missing_partitions(planned, existing):
    """What of ``planned`` still has to be created, given ``existing`` (both lists of Partition).

    Returns ``(to_create, conflicts)``: a planned partition is skipped when its name exists, or
    when it is a default partition and the table has one already; a range partition whose range
    overlaps an existing one under another name is not created and is reported in
    ``conflicts`` (one sentence each) — PostgreSQL would refuse it.
    """
    names = set(p.name for p in existing)
    has_default = any(p.kind == "default" for p in existing)
    ranges = [p for p in existing if p.kind == "range"]
    to_create, conflicts = [], []
    for p in planned:
        if p.name in names or (p.kind == "default" and has_default):
            continue
        if p.kind == "range":
            clash = [e for e in ranges if _overlaps(p, e)]
            if clash:
                conflicts.append("partition %s [%s, %s) overlaps the existing partition %s [%s, %s); not created."
                                 % (p.name, _show(p.lower), _show(p.upper), clash[0].name,
                                    _show(clash[0].lower), _show(clash[0].upper)))
                continue
        to_create.append(p)
    return to_create, conflicts


def blocked_by_default(session, schema, default_name, key, partitions, key_type):
    """The range partitions of ``partitions`` whose range already has rows in the default
    partition ``schema.default_name`` (read-only).

    PostgreSQL refuses to create such a partition (HP14, docs/design.md): the rows must first
    move out of the default partition. One indexed ``EXISTS`` per partition: call it with the
    partitions still to be created, not with the whole plan.
    """
    out = []
    for p in partitions:
        if p.kind != "range":
            continue
        conds = []
        if p.lower is not None:
            conds.append(sql.SQL("{} >= {}").format(sql.Identifier(key), literal(p.lower, key_type)))
        if p.upper is not None:
            conds.append(sql.SQL("{} < {}").format(sql.Identifier(key), literal(p.upper, key_type)))
        where = sql.SQL(" AND ").join(conds) if conds else sql.SQL("true")
        stmt = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {})").format(sql.Identifier(schema, default_name),
                                                                           where)
        if session.scalar(stmt):
            out.append(p)
    return out


def _show(value):
    return "-inf/+inf" if value is None else _iso(value)


def show_key(value):
    """A key or a layout boundary for the operator: instants in UTC (HP13), None (an open end) as MAXVALUE."""
    if value is None:
        return "MAXVALUE"
    if isinstance(value, datetime.datetime):
        return (value.astimezone(UTC) if value.tzinfo is not None else value).isoformat(sep=" ")
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _overlaps(a, b):
    # None is unbounded: MINVALUE as a lower bound, MAXVALUE as an upper bound.
    a_starts_before_b_ends = b.upper is None or a.lower is None or a.lower < b.upper
    b_starts_before_a_ends = a.upper is None or b.lower is None or b.lower < a.upper
    return a_starts_before_b_ends and b_starts_before_a_ends


# --------------------------------------------------------------------------- retention and routing

def retention_cutoff(spec, now):
    """The date before which range partitions of ``spec`` are past retention (None: keep all).

    ``retention`` counts months back from ``now`` (UTC), day clamped to the month's length:
    with 12 on 2025-05-10 every partition ending on or before 2024-05-10 is expired.
    """
    if not spec.retention or is_width(spec.interval):
        return None
    d = _as_date(now)
    m = d.year * 12 + d.month - 1 - spec.retention
    year, month = m // 12, m % 12 + 1
    last_day = (datetime.date(year + month // 12, month % 12 + 1, 1) - datetime.timedelta(days=1)).day
    return datetime.date(year, month, min(d.day, last_day))


def expired_partitions(spec, partitions, now):
    """Range partitions entirely older than the retention cutoff (oldest first): the upper bound at
    or before the cutoff's midnight (UTC for timestamptz) — compared as the key's own values, so a
    bound inside a day (a table partitioned by other means) never lets a partition holding newer
    rows go. The database's retention_plan (templates/sql/maintenance) decides the same."""
    cutoff = retention_cutoff(spec, now)
    if cutoff is None:
        return []

    def expired(upper):
        if isinstance(upper, datetime.datetime):
            return upper <= bound_value(cutoff, "timestamptz" if upper.tzinfo else "timestamp")
        return upper <= cutoff
    out = [p for p in partitions if p.kind == "range" and p.upper is not None and expired(p.upper)]
    return sorted(out, key=lambda p: p.upper)


def partition_for(spec, value):
    """Name of the partition ``value`` belongs in by ``spec`` (range and list; None for hash,
    which the server computes). A list value in no list is the default partition's, or None."""
    if spec.strategy == "range":
        return partition_name(spec.name, suffix_for(floor_boundary(value, spec.interval), spec.interval))
    if spec.strategy == "list":
        for name, values in spec.values.items():
            if str(value) in [str(v) for v in values]:
                return partition_name(spec.name, name)
        return partition_name(spec.name, "default") if spec.default_partition else None
    return None
