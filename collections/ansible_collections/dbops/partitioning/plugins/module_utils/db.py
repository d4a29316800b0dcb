# -*- coding: utf-8 -*-
# Copyright: dbops.partitioning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection, execution and error handling shared by every module.

Every module builds its argument spec from ``connection_argument_spec()``, opens a
``Session`` and runs its work through ``run_module``.  The session records every
statement it runs (or, in check mode, would run) so that each module can return them
as ``queries``; statements that change something are *not* executed in check mode.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time
import traceback

try:
    import psycopg2
    import psycopg2.extensions
    import psycopg2.extras

    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported to the operator by run_module
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = traceback.format_exc()

SSL_MODES = ["allow", "disable", "prefer", "require", "verify-ca", "verify-full"]
# Timeouts a DBA may have set on the role or the database (HP22) would cancel our own work half
# way (a whole-table verification, a batch of wide rows): our sessions start with none, and set
# the limits their statements need themselves (SET LOCAL lock_timeout around DDL, a batch's
# statement_timeout in migrate/batch.py). PostgreSQL 17's transaction_timeout is reset in
# connect() (the option would be refused by older servers).
SESSION_TIMEOUTS = "-c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0"
APPLICATION_NAME = "dbops.partitioning"


class PartitioningError(Exception):
    """An error with a message meant for the operator (no traceback is shown)."""

    def __init__(self, msg, **details):
        super(PartitioningError, self).__init__(msg)
        self.msg = msg
        self.details = details


def connection_argument_spec():
    """The standard connection options, named as in community.postgresql."""
    return dict(
        login_host=dict(type="str", default="", aliases=["host"]),
        port=dict(type="int", default=5432, aliases=["login_port"]),
        login_user=dict(type="str", default="postgres", aliases=["login"]),
        login_password=dict(type="str", default="", no_log=True),
        login_unix_socket=dict(type="str", default=""),
        login_db=dict(type="str", default="postgres", aliases=["db", "database"]),
        ssl_mode=dict(type="str", default="prefer", choices=SSL_MODES),
        ca_cert=dict(type="path", aliases=["ssl_rootcert"]),
        ssl_cert=dict(type="path"),
        ssl_key=dict(type="path", no_log=False),
        connect_params=dict(type="dict", default={}),
        connect_timeout=dict(type="int", default=10),
    )


def connect_kwargs(params, application_suffix=""):
    """Translate module parameters into psycopg2.connect() keyword arguments."""
    host = params.get("login_unix_socket") or params.get("login_host") or None
    kwargs = dict(
        host=host,
        port=params.get("port") or 5432,
        user=params.get("login_user") or "postgres",
        password=params.get("login_password") or None,
        dbname=params.get("login_db") or "postgres",
        sslmode=params.get("ssl_mode") or "prefer",
        sslrootcert=params.get("ca_cert"),
        sslcert=params.get("ssl_cert"),
        sslkey=params.get("ssl_key"),
        connect_timeout=params.get("connect_timeout") or 10,
        application_name=(APPLICATION_NAME + ("/" + application_suffix if application_suffix else ""))[:63],
        # Bounds of timestamptz partitions are written as instants in UTC; a session
        # time zone of UTC makes every bound and every date arithmetic independent of
        # the server's or the role's TimeZone setting (HP13, docs/design.md).
        options="-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres -c extra_float_digits=3 "
                + SESSION_TIMEOUTS,
    )
    kwargs.update(params.get("connect_params") or {})
    return dict((k, v) for k, v in kwargs.items() if v is not None)


def connect(params, application_suffix="", autocommit=True):
    if not HAS_PSYCOPG2:
        raise PartitioningError("The Python library psycopg2 is required on the host that runs the modules "
                                "(pip install psycopg2-binary).")
    try:
        conn = psycopg2.connect(**connect_kwargs(params, application_suffix))
    except psycopg2.OperationalError as e:
        raise PartitioningError("Cannot connect to PostgreSQL: %s" % str(e).strip())
    conn.autocommit = True
    if conn.server_version >= 170000:
        cur = conn.cursor()
        cur.execute("SET transaction_timeout = 0")
        cur.close()
    conn.autocommit = autocommit
    return conn


class Session:
    """A connection plus the list of statements it ran.

    ``query`` always runs (reads are safe in check mode); ``execute`` runs a statement
    that changes something and is skipped, but still recorded, in check mode.
    """

    def __init__(self, conn, check_mode=False):
        self.conn = conn
        self.check_mode = check_mode
        self.queries = []
        self.changed = False

    @classmethod
    def open(cls, params, check_mode=False, application_suffix=""):
        return cls(connect(params, application_suffix), check_mode)

    def close(self):
        try:
            self.conn.close()
        except Exception:  # pragma: no cover
            pass

    @property
    def server_version(self):
        return self.conn.server_version

    def as_text(self, stmt, params=None):
        if not isinstance(stmt, str):
            stmt = stmt.as_string(self.conn)
        if params is not None:
            cur = self.conn.cursor()
            try:
                return cur.mogrify(stmt, params).decode("utf-8")
            finally:
                cur.close()
        return stmt

    def _run(self, stmt, params, fetch):
        cur = self.conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
        try:
            cur.execute(stmt, params)
            if fetch and cur.description is not None:
                return cur.fetchall()
            return cur.rowcount
        finally:
            cur.close()

    def query(self, stmt, params=None):
        """Run a read-only statement and return its rows as dicts."""
        return self._run(stmt, params, True)

    def scalar(self, stmt, params=None):
        rows = self.query(stmt, params)
        if not rows:
            return None
        return list(rows[0].values())[0]

    def execute(self, stmt, params=None, record=True):
        """Run a statement that changes the database (recorded; skipped in check mode)."""
        if record:
            self.queries.append(self.as_text(stmt, params))
        self.changed = True
        if self.check_mode:
            return None
        return self._run(stmt, params, False)

    def execute_returning(self, stmt, params=None):
        """Run a changing statement and return its rows (not allowed in check mode)."""
        self.queries.append(self.as_text(stmt, params))
        self.changed = True
        if self.check_mode:
            return []
        return self._run(stmt, params, True)

    def transaction(self):
        return _Transaction(self)


class _Transaction:
    """``with session.transaction():`` runs a block in one transaction (commit or rollback)."""

    def __init__(self, session):
        self.session = session

    def __enter__(self):
        self.session.conn.autocommit = False
        return self.session

    def __exit__(self, exc_type, exc, tb):
        conn = self.session.conn
        try:
            if exc_type is None and not self.session.check_mode:
                conn.commit()
            else:
                conn.rollback()
        finally:
            conn.autocommit = True
        return False


def sleep_ms(ms):
    if ms and ms > 0:
        time.sleep(ms / 1000.0)


def run_module(module, work):
    """Run ``work(module)`` and turn every error into a clear ``fail_json``.

    ``work`` returns the result dict; the session it used should be in result['_session']
    so that the queries it ran are reported even when it fails.
    """
    if not HAS_PSYCOPG2:
        module.fail_json(msg="The Python library psycopg2 is required on the host that runs the modules "
                             "(pip install psycopg2-binary).")
    state = {}
    try:
        result = work(module, state)
    except PartitioningError as e:
        session = state.get("session")
        out = dict(msg=e.msg, changed=bool(session and session.changed and not session.check_mode),
                   queries=session.queries if session else [])
        details = dict(e.details)
        _warn(module, details.pop("warnings", None))
        out.update(details)
        module.fail_json(**out)
    except Exception as e:  # noqa: BLE001 - an operator must never see a traceback
        session = state.get("session")
        if HAS_PSYCOPG2 and isinstance(e, psycopg2.Error):
            msg = "PostgreSQL error: %s" % (e.pgerror or str(e)).strip()
            if getattr(e, "pgcode", None):
                msg += " (SQLSTATE %s)" % e.pgcode
        else:
            msg = "Unexpected error: %s: %s" % (type(e).__name__, e)
        module.fail_json(msg=msg, changed=bool(session and session.changed and not session.check_mode),
                         queries=session.queries if session else [])
    finally:
        session = state.get("session")
        if session is not None:
            session.close()
    _warn(module, result.pop("warnings", None))
    module.exit_json(**result)


def _warn(module, warnings):
    """Warnings go through Ansible's own channel (shown as [WARNING] lines and returned in the
    result's ``warnings``): a ``warnings`` key of the module's own is deprecated in ansible-core 2.19."""
    for warning in warnings or []:
        module.warn(warning)


def open_session(module, state, application_suffix=""):
    session = Session.open(module.params, module.check_mode, application_suffix)
    state["session"] = session
    return session
