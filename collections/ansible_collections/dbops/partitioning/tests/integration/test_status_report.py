"""status.yml on the lab after the switchover: one health verdict per table, the partitions as a
console table, the sizes recorded on each run, and -e partitioning_report=PATH writes a
self-contained HTML report whose script draws, in a real browser (headless Chromium), a chart of
the partition sizes, a chart of growth over the recorded runs and the tables."""
from html.parser import HTMLParser

from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain import functions
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates

from ..helpers.browser import dump_dom, screenshot
from ..helpers.maintenance import STATE, partitions, rows
from ..helpers.phase3_setup import make_verified
from ..helpers.playbook_runner import run_playbook
from ..helpers.switchover import switch

REVENUES = dict(table="public.revenues", partition_key="occurred_at", strategy="range", interval="monthly",
                premake=3, retention=6)
NOW = {"partitioning_now": "2025-06-15T10:00:00Z"}


class Elements(HTMLParser):
    """Counts of elements by tag and class, the body's attributes, every text."""

    def __init__(self, html):
        super(Elements, self).__init__()
        self.counts, self.body, self.text = {}, {}, []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        for cls in (attrs.get("class") or "").split() or [""]:
            key = "%s.%s" % (tag, cls) if cls else tag
            self.counts[key] = self.counts.get(key, 0) + 1

    def handle_data(self, data):
        self.text.append(data)

    def count(self, key):
        return self.counts.get(key, 0)


def rows_in(html, table_class):
    """Rows of the tbody of every <table class=table_class> in ``html``."""
    count = 0
    for part in html.split("<table")[1:]:
        head = part.split(">", 1)[0]
        if 'class="%s"' % table_class in head:
            count += part.split("</table>", 1)[0].count("<tr") - 1   # less the header row
    return count


def test_status_and_its_report_on_the_lab(pg, db, conn, tmp_path):
    make_verified(pg, db, rows=300, extras=False)            # public.revenues, monthly 2025-01 .. 2025-06 + default
    switch(pg, db)
    functions.ensure_functions(Session(conn), SqlTemplates.bundled(), STATE)   # as phase 4 or maintenance do
    conn.cursor().execute("INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('2031-01-01', 'eu', 1)")
    report = str(tmp_path / "status.html")

    first = run_playbook("status", pg, db, [REVENUES], extra_vars=dict(NOW, partitioning_report=report))
    assert not first.failed and first.changed == 0, first
    text = " ".join(first.output.split())
    # one verdict: rows in the default partition, fewer future partitions than premake (2025-06 is the last)
    assert "public.revenues: switched" in text and "; verdict WARNING; WARNING 1 rows in the default" in text, text
    assert "1 rows in the default partition revenues_default" in text
    assert "only 0 future partitions ready (premake 3)" in text
    assert "oldest revenues_2025_01 (retention 6 months)" in text
    assert "revenues_2025_03 2025-03-01 00:00:00+00 2025-04-01 00:00:00+00" in text   # the console table

    second = run_playbook("status", pg, db, [REVENUES], extra_vars=dict(NOW, partitioning_report=report))
    assert not second.failed and second.changed == 0, second
    leaves = len(partitions(conn, "revenues"))
    assert rows(conn, "SELECT count(DISTINCT at), count(*) FROM %s.partition_size_history" % STATE) == [(2, 2 * leaves)]

    with open(report) as f:
        source = f.read()
    assert "http://" not in source.replace("http://www.w3.org/2000/svg", "") and "https://" not in source
    dom = dump_dom(report)
    drawn = Elements(dom)
    assert drawn.body.get("data-drawn") == "yes", dom[-2000:]
    assert drawn.count("svg.chart-sizes") == 1 and drawn.count("svg.chart-growth") == 1
    assert drawn.count("rect.bar") == leaves
    assert drawn.count("path.growth") == 1 and drawn.count("circle.point") == 2
    assert rows_in(dom, "partitions") == leaves and rows_in(dom, "summary") == 1
    assert drawn.count("span.warning") >= 2                  # in the summary and the table's heading
    assert "revenues_default" in dom and "rows in the default partition" in dom
    screenshot(report, "status_report.png")
