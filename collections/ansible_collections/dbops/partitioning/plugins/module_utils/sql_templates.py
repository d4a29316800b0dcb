# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render the Jinja2 SQL templates of ``templates/sql`` safely.

Templates never receive raw text: every value they print must pass through a filter
that quotes it with psycopg2's ``sql`` module (``ident``, ``lit``, ``idents``) or be an
already composed ``sql.Composable`` (``sql``). Printing anything else is an error, so a
template cannot interpolate an unquoted identifier or value by accident. The key expressions
of ``keys`` (``key_json``, ``key_in_range``, ``key_match``, ...) are globals: they return
composed SQL.

The templates travel with the modules as Python data (``sql_texts.TEXTS``, compiled from
the ``.sql.j2`` files by ``make sql-texts``): ``SqlTemplates.bundled()`` is the one
instance a process needs. Its Jinja environment and compiled templates are built once;
the connection a value is quoted for is part of each render's context.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbops.partitioning.plugins.module_utils import keys
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_texts import TEXTS

try:
    import jinja2
    from markupsafe import Markup
    from psycopg2 import sql
except ImportError:  # pragma: no cover - psycopg2 absence is reported by run_module
    jinja2 = None
    sql = None
    Markup = str

TEMPLATE_SUFFIX = ".sql.j2"
# The render context's name for the connection the filters quote for.
_CONN = "__sql_conn"


class _Quoted(Markup):
    """Text that has been quoted for SQL and may be printed by a template.

    It is a ``Markup`` so that, with autoescape on, the output of a template's own macros
    (also ``Markup``) may be printed too, while any plain string is refused by ``finalize``.
    """


def _conn(context):
    return context[_CONN]


def _defined(value):
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return value


def _template_name(context):
    return (context.name or "?")[: -len(TEMPLATE_SUFFIX)]


def _ident(context, value):
    _defined(value)
    parts = value if isinstance(value, (list, tuple)) else (value,)
    return _Quoted(sql.Identifier(*parts).as_string(_conn(context)))


def _lit(context, value):
    _defined(value)
    return _Quoted(sql.Literal(value).as_string(_conn(context)))


def _composed(context, value):
    return _Quoted(value.as_string(_conn(context)))


def _idents(context, values, prefix=None):
    """``cols|idents`` -> ``"a", "b"``; ``cols|idents(new)`` -> ``NEW."a", NEW."b"``."""
    _defined(values)
    conn = _conn(context)
    pre = (prefix.as_string(conn) + ".") if prefix is not None else ""
    return _Quoted(", ".join(pre + sql.Identifier(v).as_string(conn) for v in values))


def _finalize(context, value):
    if isinstance(value, Markup) or value == "":
        return value
    if isinstance(value, sql.Composable):
        return _composed(context, value)
    if isinstance(value, bool):
        raise PartitioningError("Template %s prints a boolean; use lit." % _template_name(context))
    if isinstance(value, int):
        return str(value)
    raise PartitioningError("Template %s prints an unquoted value %r: use |ident or |lit."
                            % (_template_name(context), value))


class SqlTemplates:
    """``{name: template text}`` (names like ``sync/triggers``) and one Jinja environment."""

    _bundled = None

    def __init__(self, texts):
        if not texts:
            raise PartitioningError("No SQL templates were given.")
        self.texts = dict(texts)
        self.env = jinja2.Environment(
            undefined=jinja2.StrictUndefined, autoescape=True, finalize=jinja2.pass_context(_finalize),
            keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
            loader=jinja2.DictLoader(dict((k + TEMPLATE_SUFFIX, v) for k, v in self.texts.items())))
        for name, fn in (("ident", _ident), ("lit", _lit), ("sql", _composed), ("idents", _idents)):
            self.env.filters[name] = jinja2.pass_context(fn)
        self.env.globals.update(keys.TEMPLATE_GLOBALS)

    @classmethod
    def bundled(cls):
        """The templates shipped with the collection; built once per process."""
        if cls._bundled is None:
            cls._bundled = cls(TEXTS)
        return cls._bundled

    def render(self, name, conn, /, **context):
        """The SQL text of template ``name`` with every printed value quoted for ``conn``."""
        if name not in self.texts:
            raise PartitioningError("SQL template %r is missing from templates/sql." % name)
        context[_CONN] = conn
        try:
            return str(self.env.get_template(name + TEMPLATE_SUFFIX).render(**context))
        except (jinja2.TemplateError, TypeError) as e:
            raise PartitioningError("SQL template %s cannot be rendered: %s" % (name, e))
