"""A stand-in for the ``get-pip.py`` that ``ansible-test`` downloads to put pip into the virtual
environments of its sanity tests.

ansible-test fetches that script from its own CI file host, which a machine that reaches only
the package index cannot; it then looks for it in its cache first. ``make sanity`` puts this file
there: it bootstraps pip from the interpreter's own ``ensurepip`` and installs what get-pip.py
would install (its arguments are pip's, plus get-pip's ``--no-setuptools``/``--no-wheel``) from
the package index.
"""
import ensurepip
import os
import subprocess
import sys

GET_PIP_ONLY = ("--no-setuptools", "--no-wheel")

environment = dict(os.environ)  # before ensurepip, which turns pip's configuration off in os.environ
ensurepip.bootstrap(upgrade=True)
args = [a for a in sys.argv[1:] if a not in GET_PIP_ONLY]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args, env=environment))
