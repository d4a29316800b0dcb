# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SQL text an operator writes into a table spec: index expressions, index predicates, report queries.

Such text cannot be quoted like a name or a value: it *is* SQL. Before it is ever sent to a
server it must be one piece that stays inside the parentheses we put around it, so that it can
never end our statement and start another one. ``check_fragment`` refuses, by a lexical scan
that knows PostgreSQL's quoting, whatever could break out:

* ``;`` outside a quoted string or name (a second statement),
* ``--`` and ``/*`` (a comment could swallow our closing parenthesis),
* ``$`` outside quotes (dollar quoting and parameters, whose extent a simple scan cannot know),
* a parenthesis closed before it was opened, or left open, and an unterminated quote,
* backslashes inside a plain '...' string: with ``standard_conforming_strings`` off they would
  escape the closing quote (the probe and the builds run with it on; refusing also keeps the
  text's meaning the same on every server).

What passes is then parsed by the server itself before anything is built (maintain/optimize.py
probes an index on an empty temporary copy of the table's columns) and what is built uses the
server's own deparsed text (``pg_get_indexdef``), never the operator's text next to our names.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type


class FragmentError(ValueError):
    """The text cannot be used safely; the message says why."""


def check_fragment(text, what="expression"):
    """``text`` stripped, when it is one self-contained piece of SQL; else FragmentError."""
    if not isinstance(text, str) or not text.strip():
        raise FragmentError("%s must be non-empty SQL text" % what)
    text = text.strip()
    depth, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == "'":
            escapes = i > 0 and text[i - 1] in "eE" and (i < 2 or not (text[i - 2].isalnum() or text[i - 2] == "_"))
            i = _end_of_quoted(text, i, "'", escapes, what)
            continue
        if c == '"':
            i = _end_of_quoted(text, i, '"', False, what)
            continue
        if c == ";":
            raise FragmentError("%s must be one piece of SQL: ';' is not allowed outside quotes" % what)
        if text.startswith("--", i) or text.startswith("/*", i):
            raise FragmentError("%s must not contain comments (-- or /*)" % what)
        if c == "$":
            raise FragmentError("%s must not contain '$' outside quotes (dollar quoting, parameters)" % what)
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise FragmentError("%s closes a parenthesis it did not open" % what)
        i += 1
    if depth:
        raise FragmentError("%s leaves %d parenthesis(es) open" % (what, depth))
    return text


def _end_of_quoted(text, start, quote, escapes, what):
    """Index after the quoted string or name that starts at ``start``."""
    i, n = start + 1, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            if not escapes and quote == "'":
                raise FragmentError("%s must not contain a backslash in a '...' string (its meaning depends on "
                                    "standard_conforming_strings); write E'...' for escapes" % what)
            if escapes:
                i += 2
                continue
        if c == quote:
            if i + 1 < n and text[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    raise FragmentError("%s has an unterminated %s" % (what, "string" if quote == "'" else "quoted name"))
