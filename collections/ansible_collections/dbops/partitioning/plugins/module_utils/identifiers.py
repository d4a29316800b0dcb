# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parsing, validation and derivation of PostgreSQL identifiers.

Operators write table names as in SQL: ``public.revenues``, ``revenues`` (schema
``public``) or ``"Sales"."Revenues"`` (quoted, case kept).  Every name that reaches SQL
goes through ``psycopg2.sql.Identifier``; nothing here builds SQL text.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import difflib
import hashlib
import re

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError

MAX_IDENTIFIER_BYTES = 63
_UNQUOTED = re.compile(r'[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*')


def _parts(text):
    """Split a possibly quoted, dotted SQL name into its parts (case folded as PostgreSQL does)."""
    parts, i, n = [], 0, len(text)
    while i < n:
        if text[i] == '"':
            j, buf = i + 1, []
            while True:
                k = text.find('"', j)
                if k < 0:
                    raise PartitioningError("Unterminated quoted identifier in %r." % text)
                buf.append(text[j:k])
                if k + 1 < n and text[k + 1] == '"':
                    buf.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            part = "".join(buf)
        else:
            m = _UNQUOTED.match(text, i)
            if not m:
                raise PartitioningError("%r is not a valid table name: use schema.table, table, or "
                                        "\"Quoted\".\"Names\"." % text)
            part = m.group(0).lower()
            i = m.end()
        if not part:
            raise PartitioningError("Empty identifier in %r." % text)
        check_length(part)
        parts.append(part)
        if i < n:
            if text[i] != ".":
                raise PartitioningError("%r is not a valid table name: unexpected %r." % (text, text[i]))
            i += 1
            if i == n:
                raise PartitioningError("%r ends with a dot." % text)
    return parts


def check_length(name):
    if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise PartitioningError("Identifier %r is longer than %d bytes; PostgreSQL would truncate it."
                                % (name, MAX_IDENTIFIER_BYTES))
    return name


def parse_table(text, default_schema="public"):
    """``'public.revenues'`` -> ``('public', 'revenues')``."""
    if not isinstance(text, str) or not text.strip():
        raise PartitioningError("A table name is required.")
    parts = _parts(text.strip())
    if len(parts) == 1:
        return default_schema, parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise PartitioningError("%r has too many parts: use schema.table." % text)


def parse_column(text):
    if not isinstance(text, str) or not text.strip():
        raise PartitioningError("A column name is required.")
    parts = _parts(text.strip())
    if len(parts) != 1:
        raise PartitioningError("%r is not a single column name." % text)
    return parts[0]


def qualified(schema, name):
    """The canonical display form of a table: quote only where SQL needs it."""
    return "%s.%s" % (display(schema), display(name))


def display(name):
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"%s"' % name.replace('"', '""')


def derived_name(base, suffix):
    """``base + suffix`` kept within 63 bytes, deterministically.

    When the name would be too long the base is shortened and a short hash of the full
    name is inserted, so two long bases never collide on the same derived name.
    """
    full = base + suffix
    if len(full.encode("utf-8")) <= MAX_IDENTIFIER_BYTES:
        return full
    digest = hashlib.md5(full.encode("utf-8")).hexdigest()[:6]
    room = MAX_IDENTIFIER_BYTES - len(suffix.encode("utf-8")) - len(digest) - 1
    cut = base.encode("utf-8")[:room].decode("utf-8", "ignore")
    return "%s_%s%s" % (cut, digest, suffix)


def did_you_mean(word, choices):
    """`` (did you mean 'x'?)`` when one of ``choices`` is close to ``word`` (a typo), else ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return " (did you mean %r?)" % close[0] if close else ""
