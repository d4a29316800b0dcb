# dbops.partitioning — two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
PIP   := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
LAB   ?= .lab
# How many pytest workers: one per core (CI has 2).
JOBS  ?= auto
COLLECTION := collections/ansible_collections/dbops/partitioning
# ansible-test sanity runs from its own venv, with ansible-core as in $(VENV); its per-test venvs
# and caches live under SANITY_HOME, inside the checkout (nothing outside it changes).
SANITY_VENV ?= .venv-sanity
SANITY_HOME ?= $(CURDIR)/.sanity-home
PYVER := $(shell python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')

.PHONY: help venv demo test test-unit test-integration test-molecule bench lint sanity collection sql-texts lab-up lab-down lab-status clean

help:
	@echo "make demo       lab servers + demo data + the migration under a live write load"
	@echo "make test       the whole test suite (real PostgreSQL 18 from the wheel, 15 when installed)"
	@echo "make test-molecule  the molecule scenarios alone: default, rollback, multi_host (no Docker)"
	@echo "make bench      benchmarks: tables and plots in bench/results/ (BENCH=reports runs one of them)"
	@echo "make lint       ansible-test sanity, ansible-lint (production profile), ansible-doc of every module"
	@echo "make collection build the collection tarball into dist/ (ansible-galaxy collection build)"
	@echo "make lab-up     start the lab servers (LAB_SERVERS=2 LAB_ROWS=1000000 LAB_BINDIR=...)"
	@echo "make lab-down   stop and remove the lab servers"
	@echo "make sql-texts  compile templates/sql into the collection's sql_texts.py (after editing a template)"

$(STAMP): requirements.txt $(COLLECTION)/requirements.txt
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

lab-up: $(STAMP)
	$(PY) -m lab up

lab-down: $(STAMP)
	$(PY) -m lab down

lab-status: $(STAMP)
	$(PY) -m lab status

demo: $(STAMP)
	$(PY) -m lab demo

test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) collections/ansible_collections/dbops/partitioning/tests

# The molecule scenarios (molecule/*), each on throwaway lab servers. `make test` runs them too
# (tests/integration/test_molecule.py); this runs them alone, as molecule reports them.
test-molecule: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/molecule test --all

test-unit: $(STAMP)
	$(PY) -m pytest collections/ansible_collections/dbops/partitioning/tests/unit

# BENCH: benchmark names to run (trigger backfill switchover reports); empty runs them all.
BENCH ?=

bench: $(STAMP)
	$(PY) -m bench $(BENCH)

# The SQL templates travel with the modules as Python data (docs/design.md, "The collection
# as an artifact"); the .sql.j2 files are the source.
sql-texts:
	python3 tools/sql_texts.py

lint: $(STAMP) sanity
	$(PY) tools/sql_texts.py --check
	$(VENV)/bin/ansible-lint --profile production
	for m in $$(ls $(COLLECTION)/plugins/modules/*.py | xargs -n1 basename | sed 's/\.py$$//'); do \
	  $(VENV)/bin/ansible-doc dbops.partitioning.$$m >/dev/null || exit 1; done

# ansible-test sanity, run without docker and without ansible-test's own download host: --local
# with the requirements of each test installed from the package index into venvs it makes under
# SANITY_HOME. It bootstraps pip in those venvs with a get-pip.py it downloads from its CI host;
# tools/get_pip.py, put in its cache, does the same from Python's ensurepip. Every test passes with
# no ignore file (an ignore would go in $(COLLECTION)/tests/sanity/ignore-<core major.minor>.txt,
# with its reason).
$(SANITY_VENV)/.installed: $(STAMP)
	python3 -m venv $(SANITY_VENV)
	$(SANITY_VENV)/bin/pip install --quiet "ansible-core==$$($(PY) -c 'from ansible.release import __version__; print(__version__)')"
	touch $@

sanity: $(SANITY_VENV)/.installed
	mkdir -p $(SANITY_HOME)/.ansible/test/cache
	pip=$$(grep -o "pip='[0-9.]*'" $(SANITY_VENV)/lib/python*/site-packages/ansible_test/_internal/python_requirements.py | tr -dc '0-9.' | tr . _); \
	  cp tools/get_pip.py $(SANITY_HOME)/.ansible/test/cache/get_pip_$$pip.py
	cd $(COLLECTION) && HOME=$(SANITY_HOME) $(CURDIR)/$(SANITY_VENV)/bin/ansible-test sanity --local --python $(PYVER) --requirements

# The collection as an artifact: dist/dbops-partitioning-<version>.tar.gz, installable offline with
# ansible-galaxy collection install (tests/integration/test_collection_artifact.py runs it).
collection: $(STAMP)
	$(VENV)/bin/ansible-galaxy collection build --force --output-path $(CURDIR)/dist $(COLLECTION)

clean: lab-down
	rm -rf $(VENV) $(SANITY_VENV) $(SANITY_HOME) dist $(COLLECTION)/tests/output
