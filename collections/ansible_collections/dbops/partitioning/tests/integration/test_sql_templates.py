"""The template renderer refuses to print anything that was not quoted for SQL (real server: psycopg2
quotes identifiers and literals with the connection's libpq)."""
import pytest
from psycopg2 import sql

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates


def render(text, conn, **ctx):
    return SqlTemplates({"t": text}).render("t", conn, **ctx)


def test_identifiers_and_literals_are_quoted(conn):
    out = render("SELECT {{ col|ident }} FROM {{ tbl|ident }} WHERE x = {{ v|lit }}", conn,
                 col='Mixed"Case', tbl=("sales", "Revenues"), v="O'Brien")
    assert out == 'SELECT "Mixed""Case" FROM "sales"."Revenues" WHERE x = \'O\'\'Brien\''


def test_a_raw_string_is_refused(conn):
    with pytest.raises(PartitioningError, match="unquoted value"):
        render("DROP TABLE {{ name }}", conn, name="x; DROP DATABASE y")


def test_idents_lists_and_prefixes(conn):
    out = render("({{ cols|idents }}) = ({{ cols|idents(new) }})", conn, cols=["a", "B"], new=sql.SQL("NEW"))
    assert out == '("a", "B") = (NEW."a", NEW."B")'


def test_macros_output_may_be_printed(conn):
    text = "{% macro m(x) %}[{{ x|ident }}]{% endmacro %}{{ m(n) }}"
    assert render(text, conn, n="a") == '["a"]'


def test_integers_print_as_numbers(conn):
    assert render("LIMIT {{ n }}", conn, n=5) == "LIMIT 5"


def test_undefined_variables_are_errors(conn):
    with pytest.raises(PartitioningError, match="cannot be rendered"):
        render("{{ missing|ident }}", conn)


def test_every_project_template_parses():
    templates = SqlTemplates.bundled()
    import jinja2
    env = jinja2.Environment()
    for name, text in templates.texts.items():
        env.parse(text)  # raises on a syntax error
    assert "state/001_state_schema" in templates.texts
