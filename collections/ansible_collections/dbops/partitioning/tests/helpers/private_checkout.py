"""A copy of this checkout in a private directory, as a newcomer's clone in a home directory
of mode 0700 or in ``mktemp -d`` is, and the modes of the directories around it (nothing
outside the lab's own directories may change mode)."""
import os
import shutil

from .paths import ROOT

# What a clone holds besides the sources: none of it is needed by the copy.
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", ".lab", "__pycache__", ".pytest_cache", "*.pyc", "results")


def private_checkout(parent):
    """A copy of this checkout at ``parent/p`` (``parent`` private, as ``mktemp -d`` makes it)."""
    checkout = os.path.join(parent, "p")
    shutil.copytree(ROOT, checkout, ignore=NOT_COPIED, symlinks=True)
    return checkout


def private_bindir(parent, bindir):
    """``bindir`` seen through a link inside ``parent``: as a private clone's venv holds the wheel."""
    install = os.path.dirname(os.path.dirname(os.path.dirname(bindir)))      # .../site-packages
    link = os.path.join(parent, "site-packages")
    os.symlink(install, link)
    return os.path.join(link, os.path.relpath(bindir, install))


def modes(paths):
    """``{path: mode}`` of ``paths``, of every directory above them and every directory below them
    (symbolic links not followed)."""
    out = {}
    for path in paths:
        up = os.path.abspath(path)
        while True:
            out[up] = os.lstat(up).st_mode
            if up == os.path.dirname(up):
                break
            up = os.path.dirname(up)
        for dirpath, dirnames, _files in os.walk(path):
            for name in dirnames:
                full = os.path.join(dirpath, name)
                out[full] = os.lstat(full).st_mode
    return out


def changed_modes(before, after, except_under=()):
    return sorted("%s: %o -> %o" % (p, before[p], after.get(p, 0)) for p in before
                  if after.get(p) is not None and after[p] != before[p]
                  and not any(p == d or p.startswith(d + os.sep) for d in except_under))
