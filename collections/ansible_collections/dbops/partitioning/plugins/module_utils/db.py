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

# How a server says it ended a session, and what that means. psycopg2 reports a session the
# server ended only as "server closed the connection unexpectedly" (no SQLSTATE); the server's
# own FATAL message is still in libpq's error message, and names the cause.
TERMINATIONS = (
    ("terminating connection due to administrator command", "57P01",
     "an administrator ended the session (pg_terminate_backend) or the server is shutting down"),
    ("terminating connection because of crash of another server process", "57P02",
     "another server process crashed and the server restarted every session"),
    ("terminating connection due to idle-in-transaction timeout", "25P03",
     "idle_in_transaction_session_timeout ended the session"),
    ("terminating connection due to idle-session timeout", "57P05", "idle_session_timeout ended the session"),
    ("terminating connection due to unexpected postmaster exit", "57P01", "the server stopped"),
)


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


def connection_lost(conn):
    """Why ``conn`` broke, as one sentence for the operator; None while it is usable.

    The server's own words (a FATAL message libpq received before the socket closed) are read
    from libpq's error message; without them the server said nothing: the backend was killed or
    crashed, the server went down, or the network failed."""
    if conn is None or not conn.closed:
        return None
    try:
        said = conn.info.error_message or ""
    except Exception:  # noqa: BLE001 - a connection closed by us has no libpq state left
        said = ""
    fatal = [line.strip() for line in said.splitlines() if line.strip().startswith(("FATAL:", "PANIC:"))]
    for text, sqlstate, meaning in TERMINATIONS:
        if any(text in line for line in fatal):
            return "the server ended the session: %s (SQLSTATE %s: %s)" % (fatal[0], sqlstate, meaning)
    if fatal:
        return "the server ended the session: %s" % fatal[0]
    return ("the server closed the connection without a message (its backend was killed or crashed, the server "
            "went down, or the network failed)")


def lost_connection_error(conn, doing):
    """The operator's error for a connection lost while ``doing``: the cause, and what it means
    for what this run did (the server rolls back the transaction in progress; what committed
    before stays, and every playbook resumes)."""
    return PartitioningError(
        "The connection to PostgreSQL was lost %s: %s. The transaction in progress was rolled back by the server; "
        "what this run committed before it stays. Run it again: it resumes where it stopped."
        % (doing, connection_lost(conn)), connection_lost=True)


class Session:
    """A connection plus the list of statements it ran.

    ``query`` always runs (reads are safe in check mode); ``execute`` runs a statement
    that changes something and is skipped, but still recorded, in check mode.
    ``params`` (the module's connection options, when the session was opened from them) let a
    caller open another connection to the same database: ``reconnect`` after a lost connection.
    """

    def __init__(self, conn, check_mode=False, params=None, application_suffix=""):
        self.conn = conn
        self.check_mode = check_mode
        self.params = params
        self.application_suffix = application_suffix
        self.queries = []
        self.changed = False

    @classmethod
    def open(cls, params, check_mode=False, application_suffix=""):
        return cls(connect(params, application_suffix), check_mode, params, application_suffix)

    @property
    def lost(self):
        """Why the connection broke (``connection_lost``), or None while it is usable."""
        return connection_lost(self.conn)

    def reconnect(self):
        """Replace a broken connection by a new one to the same database (same options). Only a
        session opened from connection options can; others raise ``PartitioningError``."""
        if self.params is None:
            raise PartitioningError("The connection to PostgreSQL was lost (%s) and this session cannot open another "
                                    "one." % self.lost)
        self.close()
        self.conn = connect(self.params, self.application_suffix)
        return self

    def close(self):
        """Release this session's advisory locks (the per-table work lock), then disconnect.

        The server would release them too, but only once its backend has seen the connection
        close, a moment after this returns: a run started right after this one (an operator's
        retry after a refusal) would find the table still taken by a finished run."""
        try:
            if not self.conn.closed:
                self.conn.rollback()
                self.conn.autocommit = True
                cur = self.conn.cursor()
                cur.execute("SELECT pg_catalog.pg_advisory_unlock_all()")
                cur.close()
        except Exception:  # noqa: BLE001 - a broken connection has no lock left to release
            pass
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
        if conn.closed:
            # the server ended the session: it rolled the transaction back itself, and any call
            # here would only replace the real error by "connection already closed"
            return False
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
        lost = _lost_connection_of(session, e)
        if lost is not None:
            # the real cause, not what a later call on the dead connection said ("connection already closed")
            msg = lost_connection_error(lost, "while %s ran" % (session and session.application_suffix
                                                                or "the module")).msg
        elif HAS_PSYCOPG2 and isinstance(e, psycopg2.Error):
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


def _lost_connection_of(session, error):
    """The broken connection behind ``error``: the module's session's, or the one the failed
    statement ran on (a worker's); None when both are usable."""
    cursor = getattr(error, "cursor", None)
    for conn in (session.conn if session is not None else None, getattr(cursor, "connection", None)):
        if connection_lost(conn):
            return conn
    return None


def _warn(module, warnings):
    """Warnings go through Ansible's own channel (shown as [WARNING] lines and returned in the
    result's ``warnings``): a ``warnings`` key of the module's own is deprecated in ansible-core 2.19."""
    for warning in warnings or []:
        module.warn(warning)


def open_session(module, state, application_suffix=""):
    session = Session.open(module.params, module.check_mode, application_suffix)
    state["session"] = session
    return session
