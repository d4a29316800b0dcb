# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render the Jinja2 SQL templates of ``templates/sql`` safely.

Templates never receive raw text: every value they print must pass through a filter
that quotes it with psycopg2's ``sql`` module (``ident``, ``lit``) or be an already
composed ``sql.Composable``.  Printing anything else is an error, so a template cannot
interpolate an unquoted identifier or value by accident.

The template texts reach a module from the controller through the module's action
plugin (``_sql_templates``); code running from a checkout (tests, the lab) can load
them straight from the directory.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError

try:
    import jinja2
    from markupsafe import Markup
    from psycopg2 import sql
except ImportError:  # pragma: no cover - psycopg2 absence is reported by run_module
    jinja2 = None
    sql = None
    Markup = str

TEMPLATE_SUFFIX = ".sql.j2"


class _Quoted(Markup):
    """Text that has been quoted for SQL and may be printed by a template.

    It is a ``Markup`` so that, with autoescape on, the output of a template's own macros
    (also ``Markup``) may be printed too, while any plain string is refused by ``finalize``.
    """


def find_templates_dir(start=None):
    """Find ``templates/sql`` of a checkout by walking up from ``start``."""
    here = os.path.abspath(start or os.path.dirname(__file__))
    while True:
        candidate = os.path.join(here, "templates", "sql")
        if os.path.isdir(candidate) and os.path.exists(os.path.join(candidate, "state")):
            return candidate
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def read_templates(directory):
    """All ``*.sql.j2`` files below ``directory`` as ``{relative/name: text}``."""
    texts = {}
    for root, _dirs, files in os.walk(directory):
        for name in files:
            if name.endswith(TEMPLATE_SUFFIX):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, directory).replace(os.sep, "/")
                with open(path, encoding="utf-8") as f:
                    texts[rel[: -len(TEMPLATE_SUFFIX)]] = f.read()
    return texts


class SqlTemplates:
    def __init__(self, texts):
        if not texts:
            raise PartitioningError("The SQL templates were not found (templates/sql of the project); "
                                    "set partitioning_sql_templates_dir.")
        self.texts = texts

    @classmethod
    def from_module(cls, module):
        texts = module.params.get("_sql_templates")
        if not texts:
            directory = find_templates_dir()
            texts = read_templates(directory) if directory else {}
        return cls(texts)

    @classmethod
    def from_checkout(cls):
        return cls(read_templates(find_templates_dir()))

    def render(self, name, conn, /, **context):
        if name not in self.texts:
            raise PartitioningError("SQL template %r is missing from templates/sql." % name)

        def defined(value):
            if isinstance(value, jinja2.Undefined):
                value._fail_with_undefined_error()
            return value

        def ident(value):
            defined(value)
            if isinstance(value, (list, tuple)):
                return _Quoted(sql.Identifier(*value).as_string(conn))
            return _Quoted(sql.Identifier(value).as_string(conn))

        def lit(value):
            defined(value)
            return _Quoted(sql.Literal(value).as_string(conn))

        def composed(value):
            return _Quoted(value.as_string(conn))

        def idents(values, prefix=None):
            """``cols|idents`` -> ``"a", "b"``; ``cols|idents(new)`` -> ``NEW."a", NEW."b"``."""
            defined(values)
            pre = (prefix.as_string(conn) + ".") if prefix is not None else ""
            return _Quoted(", ".join(pre + sql.Identifier(v).as_string(conn) for v in values))

        def finalize(value):
            if isinstance(value, Markup) or value == "":
                return value
            if isinstance(value, sql.Composable):
                return composed(value)
            if isinstance(value, bool):
                raise PartitioningError("Template %s prints a boolean; use lit." % name)
            if isinstance(value, int):
                return str(value)
            raise PartitioningError("Template %s prints an unquoted value %r: use |ident or |lit." % (name, value))

        env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=True, finalize=finalize,
                                 keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                                 loader=jinja2.DictLoader(self.texts and dict(
                                     (k + TEMPLATE_SUFFIX, v) for k, v in self.texts.items())))
        env.filters["ident"] = ident
        env.filters["lit"] = lit
        env.filters["sql"] = composed
        env.filters["idents"] = idents
        try:
            return str(env.get_template(name + TEMPLATE_SUFFIX).render(**context))
        except (jinja2.TemplateError, TypeError) as e:
            raise PartitioningError("SQL template %s cannot be rendered: %s" % (name, e))


TEMPLATES_ARGUMENT_SPEC = dict(_sql_templates=dict(type="dict", required=False))
