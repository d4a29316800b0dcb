# dbops.partitioning — two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
PIP   := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
LAB   ?= .lab
# How many pytest workers: one per core (CI has 2).
JOBS  ?= auto

.PHONY: help venv demo test test-unit test-integration bench lint sql-texts lab-up lab-down lab-status clean

help:
	@echo "make demo       lab servers + demo data + the migration under a live write load"
	@echo "make test       the whole test suite (real PostgreSQL 18 from the wheel, 15 when installed)"
	@echo "make bench      benchmarks: tables and plots in bench/results/ (BENCH=reports runs one of them)"
	@echo "make lint       ansible-lint (production profile) over the project, ansible-doc of every module"
	@echo "make lab-up     start the lab servers (LAB_SERVERS=2 LAB_ROWS=1000000 LAB_BINDIR=...)"
	@echo "make lab-down   stop and remove the lab servers"
	@echo "make sql-texts  compile templates/sql into the collection's sql_texts.py (after editing a template)"

$(STAMP): requirements.txt
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

lint: $(STAMP)
	$(PY) tools/sql_texts.py --check
	$(VENV)/bin/ansible-lint --profile production
	for m in $$(ls collections/ansible_collections/dbops/partitioning/plugins/modules/*.py | xargs -n1 basename | sed 's/\.py$$//'); do \
	  $(VENV)/bin/ansible-doc dbops.partitioning.$$m >/dev/null || exit 1; done

clean: lab-down
	rm -rf $(VENV)
