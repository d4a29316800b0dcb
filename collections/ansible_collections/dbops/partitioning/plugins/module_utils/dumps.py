# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_dump of one table before the tool drops it (cleanup: ``<table>_old``; retention: a partition),
checked readable with pg_restore and fingerprinted.

The client programs are the server's own (its ``BINDIR``, readable by superusers: the same major
version, which pg_dump needs) and otherwise the first on ``PATH``.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import hashlib
import os
import shutil
import subprocess

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError, connect_kwargs
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import qualified

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None


def find_program(session, name, explicit=None):
    """``name`` (pg_dump, pg_restore) of the server's own binaries directory when readable, else PATH."""
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise PartitioningError("%s %s is not an executable file." % (name, explicit))
        return explicit
    try:
        bindir = session.scalar("SELECT setting FROM pg_config WHERE name = 'BINDIR'")
    except Exception:  # noqa: BLE001 - pg_config is superuser-only; PATH is the fallback
        session.conn.rollback()
        bindir = None
    if bindir and os.access(os.path.join(bindir, name), os.X_OK):
        return os.path.join(bindir, name)
    found = shutil.which(name)
    if not found:
        raise PartitioningError("%s was not found (neither in the server's BINDIR %s nor in PATH): install the "
                                "PostgreSQL client of the server's version, or name it." % (name, bindir or "?"))
    return found


def find_pg_dump(session, pg_dump=None):
    return find_program(session, "pg_dump", pg_dump)


def _client_env_and_args(params):
    kw = connect_kwargs(params)
    env = dict(os.environ)
    if kw.get("password"):
        env["PGPASSWORD"] = kw["password"]
    for key, var in (("sslmode", "PGSSLMODE"), ("sslrootcert", "PGSSLROOTCERT"), ("sslcert", "PGSSLCERT"),
                     ("sslkey", "PGSSLKEY")):
        if kw.get(key):
            env[var] = str(kw[key])
    args = ["-d", kw.get("dbname", "postgres"), "-U", kw.get("user", "postgres"), "-p", str(kw.get("port", 5432))]
    if kw.get("host"):
        args += ["-h", kw["host"]]
    return env, args


def dump_table(session, params, schema, name, dump_dir, pg_dump=None):
    """``pg_dump -Fc -t schema.name`` into ``dump_dir``; returns the file's path."""
    exe = find_pg_dump(session, pg_dump)
    if not os.path.isdir(dump_dir):
        raise PartitioningError("dump_dir %s is not a directory." % dump_dir)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(dump_dir, "%s.%s.%s.dump" % (schema, name, stamp))
    env, args = _client_env_and_args(params)
    cmd = [exe, "-Fc", "-f", path, "-t", sql.Identifier(schema, name).as_string(session.conn)] + args
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise PartitioningError("pg_dump of %s failed (nothing was dropped): %s" % (qualified(schema, name),
                                                                                    p.stderr.strip()))
    return path


def verify_dump(session, path, schema, name, pg_restore=None):
    """Check that ``pg_restore --list`` reads the dump and that it holds the table's data;
    returns ``dict(path, bytes, sha256)``."""
    exe = find_program(session, "pg_restore", pg_restore)
    p = subprocess.run([exe, "--list", path], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise PartitioningError("pg_restore --list cannot read the dump %s (nothing was dropped): %s"
                                % (path, p.stderr.strip()))
    if not any(" TABLE DATA %s %s " % (schema, name) in line + " " for line in p.stdout.splitlines()):
        raise PartitioningError("The dump %s holds no data of %s (pg_restore --list); nothing was dropped."
                                % (path, qualified(schema, name)))
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return dict(path=path, bytes=os.path.getsize(path), sha256=digest.hexdigest())
