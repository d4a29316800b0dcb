"""A real browser for the HTML reports: headless Chromium from Debian's packages.

``chromium()`` finds it, installs it where it is missing and can be (root with apt-get, as in CI),
and otherwise skips the calling test with the reason. ``dump_dom`` returns the document as the
page's script left it; ``screenshot`` keeps a PNG under ``tests/output`` (ignored by git).
"""
import os
import shutil
import subprocess
import tempfile

import pytest

from .paths import COLLECTION

OUTPUT = os.path.join(COLLECTION, "tests", "output")
NAMES = ("chromium", "chromium-browser")
# No network, no first-run or background work: the page is all there is.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--hide-scrollbars"]


def _found():
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium():
    """The path of a headless-capable Chromium; installs Debian's package when missing and possible."""
    path = _found()
    if path:
        return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("headless Chromium is missing and cannot be installed here (needs root and apt-get): "
                    "apt-get install -y chromium")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    tried = []
    for cmd in (["apt-get", "install", "-y", "--no-install-recommends", "chromium"], ["apt-get", "update"],
                ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
        tried.append("%s: %s" % (" ".join(cmd), (p.stderr or p.stdout).strip().splitlines()[-1:] or "ok"))
        if cmd[1] == "install" and p.returncode == 0 and _found():
            return _found()
    pytest.skip("headless Chromium could not be installed: %s" % "; ".join(str(t) for t in tried))


def _run(args, timeout=180):
    with tempfile.TemporaryDirectory() as profile:
        p = subprocess.run([chromium()] + FLAGS + ["--user-data-dir=" + profile] + args, capture_output=True,
                           text=True, timeout=timeout, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def dump_dom(path):
    """The DOM of the local file ``path`` after its scripts ran, as HTML text."""
    return _run(["--dump-dom", "file://" + os.path.abspath(path)])


def screenshot(path, name, size="1400,2000"):
    """A PNG of the local file ``path`` kept as ``tests/output/<name>``; returns its path."""
    os.makedirs(OUTPUT, exist_ok=True)
    out = os.path.join(OUTPUT, name)
    _run(["--screenshot=" + out, "--window-size=" + size, "file://" + os.path.abspath(path)])
    assert os.path.getsize(out) > 0
    return out
