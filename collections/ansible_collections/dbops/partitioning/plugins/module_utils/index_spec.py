# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The table spec's ``indexes:``: partition-specific indexes that phase 4 builds online.

One entry (docs/table-spec.md)::

    {name: optional, columns: [column names or expression text, each optionally followed by
     ASC|DESC and NULLS FIRST|LAST], include: [column names], using: btree|brin|hash|gin|gist,
     where: "predicate SQL", with: {storage parameter: value}}

``collect_indexes`` validates a list of them without a database (spec.py calls it, so every
problem is reported with the rest of the spec's). Expressions and predicates pass
``fragments.check_fragment``; the server parses them later, before anything is built
(maintain/optimize.py). The name, when not given, is derived from the table and the columns
(``<table>_<col>_<col>_idx``, ``expr`` for an expression), kept within 63 bytes.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.fragments import FragmentError, check_fragment
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import (
    check_length, derived_name, did_you_mean, parse_column)

METHODS = ("btree", "brin", "hash", "gin", "gist")
# PostgreSQL supports INCLUDE for these access methods only.
INCLUDE_METHODS = ("btree", "gist")
KEYS = ("name", "columns", "include", "using", "where", "with")
_ORDER = re.compile(r"^(.*?)(?:\s+(ASC|DESC))?(?:\s+NULLS\s+(FIRST|LAST))?\s*$", re.I | re.S)
_PARAMETER = re.compile(r"^[a-z_][a-z0-9_]*$")
_PARAMETER_VALUE = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass
class Element:
    """One key position: a column or an expression, with its ordering (btree)."""
    column: Optional[str] = None       # the column's name (case kept as parsed)
    expression: Optional[str] = None   # SQL text (check_fragment passed)
    order: str = ""                    # '', 'ASC', 'DESC', optionally + ' NULLS FIRST|LAST'

    @property
    def label(self):
        return self.column if self.column is not None else "expr"


@dataclass
class IndexSpec:
    name: str
    columns: List[str]                       # as written (trimmed): what to_json gives back
    elements: List[Element]
    include: List[str] = field(default_factory=list)
    using: str = "btree"
    where: Optional[str] = None
    with_: Dict[str, Any] = field(default_factory=dict)

    def to_json(self):
        return {"name": self.name, "columns": list(self.columns), "include": list(self.include),
                "using": self.using, "where": self.where, "with": dict(self.with_)}


def parse_element(text):
    """``"org_id"``, ``"occurred_at DESC NULLS LAST"``, ``"lower(name)"`` -> Element."""
    m = _ORDER.match(text.strip())
    body, direction, nulls = m.group(1).strip(), (m.group(2) or "").upper(), (m.group(3) or "").upper()
    order = " ".join(x for x in (direction, "NULLS " + nulls if nulls else "") if x)
    try:
        return Element(column=parse_column(body), order=order)
    except PartitioningError:
        return Element(expression=check_fragment(body, "the expression %r" % body), order=order)


def derived_index_name(table_relname, elements):
    return derived_name("%s_%s" % (table_relname, "_".join(e.label for e in elements)), "_idx")


def collect_indexes(raw, table_relname, add):
    """Validate ``raw`` (the spec's ``indexes``) into [IndexSpec]; each problem goes to ``add(key, text)``."""
    if raw is None:
        return []
    if not isinstance(raw, (list, tuple)):
        add("indexes", "must be a list of index entries ({columns: [...], ...}), got %r" % (raw,))
        return []
    out, names = [], {}
    for position, entry in enumerate(raw):
        where = "indexes[%d]" % position
        index = _collect_one(entry, table_relname, lambda key, text: add("%s.%s" % (where, key) if key else where,
                                                                         text))
        if index is None:
            continue
        if index.name in names:
            add(where, "the name %s is also indexes[%d]'s; give one of them another name" % (index.name,
                                                                                             names[index.name]))
            continue
        names[index.name] = position
        out.append(index)
    return out


def _collect_one(entry, table_relname, add):
    if not isinstance(entry, dict):
        add("", "must be a mapping with at least columns, got %r" % (entry,))
        return None
    for key in entry:
        if key not in KEYS:
            add(str(key), "unknown key%s (known: %s)" % (did_you_mean(key, KEYS), ", ".join(KEYS)))
    ok = True
    using = entry.get("using") or "btree"
    if not isinstance(using, str) or using.strip().lower() not in METHODS:
        add("using", "%r is not one of %s%s" % (using, ", ".join(METHODS), did_you_mean(using, METHODS)))
        ok = False
    else:
        using = using.strip().lower()
    columns = entry.get("columns")
    if isinstance(columns, str):
        columns = [columns]
    elements = []
    if not isinstance(columns, (list, tuple)) or not columns:
        add("columns", "is required: a list of column names or expressions")
        ok = False
    else:
        for text in columns:
            if not isinstance(text, str) or not text.strip():
                add("columns", "%r is not a column name or an expression" % (text,))
                ok = False
                continue
            try:
                elements.append(parse_element(text))
            except FragmentError as e:
                add("columns", str(e))
                ok = False
            if elements and elements[-1].order and using != "btree":
                add("columns", "%r: ASC/DESC and NULLS FIRST/LAST need using: btree" % text)
                ok = False
    include = []
    for column in entry.get("include") or []:
        try:
            include.append(parse_column(column if isinstance(column, str) else ""))
        except PartitioningError:
            add("include", "%r is not a column name (INCLUDE takes columns, not expressions)" % (column,))
            ok = False
    if include and using not in INCLUDE_METHODS:
        add("include", "PostgreSQL supports INCLUDE only with using: %s" % " or ".join(INCLUDE_METHODS))
        ok = False
    predicate = entry.get("where")
    if predicate is not None:
        try:
            predicate = check_fragment(predicate if isinstance(predicate, str) else "", "where")
        except FragmentError as e:
            add("where", str(e))
            ok = False
    parameters = entry.get("with") or {}
    if not isinstance(parameters, dict):
        add("with", "must be a mapping of storage parameter to value, e.g. {fillfactor: 90}")
        parameters, ok = {}, False
    for key, value in parameters.items():
        if not isinstance(key, str) or not _PARAMETER.match(key):
            add("with", "%r is not a storage parameter name" % (key,))
            ok = False
        elif isinstance(value, bool):
            parameters[key] = "on" if value else "off"
        elif not isinstance(value, (int, float, str)) or not _PARAMETER_VALUE.match(str(value)):
            add("with", "%s: %r is not a plain value (a number, on/off or a word)" % (key, value))
            ok = False
    name = entry.get("name")
    if name is not None:
        try:
            name = check_length(parse_column(name if isinstance(name, str) else ""))
        except PartitioningError:
            add("name", "%r is not an index name (one identifier of at most 63 bytes)" % (name,))
            ok = False
    if not ok:
        return None
    return IndexSpec(name=name or derived_index_name(table_relname, elements), columns=[c.strip() for c in columns],
                     elements=elements, include=include, using=using, where=predicate,
                     with_=dict((k, str(v)) for k, v in sorted(parameters.items())))
