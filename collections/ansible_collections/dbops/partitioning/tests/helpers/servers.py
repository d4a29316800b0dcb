"""The lifetimes of the servers and databases the tests start: the suite's own (conftest.py) and
those a test module needs with other settings (a publisher with wal_level = logical)."""
import contextlib
import uuid

from psycopg2 import sql

from lab.servers import Server


@contextlib.contextmanager
def running_server(bindir, datadir, name, settings=None):
    """A server initialised in ``datadir`` (postgresql.conf ``settings`` added) and started;
    destroyed after the block."""
    server = Server(bindir, datadir, name=name)
    server.init(settings=settings).start()
    try:
        yield server
    finally:
        server.destroy()


@contextlib.contextmanager
def fresh_database(server, prefix):
    """A new, empty database on ``server`` named ``prefix`` and a random part; dropped after the
    block, sessions still connected to it or not."""
    name = prefix + uuid.uuid4().hex[:12]
    server.create_database(name)
    try:
        yield name
    finally:
        conn = server.connect()
        try:
            conn.cursor().execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        finally:
            conn.close()
