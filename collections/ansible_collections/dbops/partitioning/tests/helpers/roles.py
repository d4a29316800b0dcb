"""A table owner without superuser, as managed PostgreSQL gives one, and sessions as that role.

Roles are cluster-wide: their names carry the test database's name, and ``drop_roles`` removes
them (and what they own) when the test ends.
"""
from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session


def owner_role(db):
    return db.lower() + "_owner"


def make_owner(conn, db, stats=True):
    """A LOGIN role, not superuser, that may create schemas in ``db`` and tables in public (what
    phase 1 needs beyond owning the table); with ``stats`` it sees other roles' sessions
    (pg_read_all_stats), so that only the checks a test is about speak."""
    role = owner_role(db)
    cur = conn.cursor()
    cur.execute("CREATE ROLE %s LOGIN NOSUPERUSER" % role)
    cur.execute('GRANT CREATE ON DATABASE "%s" TO %s' % (db, role))
    cur.execute("GRANT CREATE ON SCHEMA public TO %s" % role)
    if stats:
        cur.execute("GRANT pg_read_all_stats TO %s" % role)
    return role


def drop_roles(conn, *roles):
    cur = conn.cursor()
    cur.execute("RESET ROLE")
    for role in roles:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        if cur.fetchone():
            cur.execute("DROP OWNED BY %s CASCADE" % role)
            cur.execute("DROP ROLE %s" % role)


def session_as(pg, db, role, check_mode=False):
    """A Session connected as ``role`` (trust authentication: the lab's servers)."""
    conn = pg.connect(db, user=role)
    return Session(conn, check_mode, params=dict(pg.module_params(db), login_user=role))
