"""awx/controller_config.yml must describe job templates that can actually run, in the execution
environment that execution-environment.yml builds."""
import os
import re
import subprocess
import sys

import pytest
import yaml

from ansible_collections.dbops.partitioning.plugins.module_utils.spec import PLAY_VARIABLES

from ..helpers.paths import COLLECTION, ROOT

CONFIG = os.path.join(ROOT, "awx", "controller_config.yml")


@pytest.fixture(scope="module")
def config():
    with open(CONFIG) as f:
        return yaml.safe_load(f)


def test_every_template_runs_an_existing_playbook_from_the_project(config):
    projects = {p["name"] for p in config["controller_projects"]}
    for template in config["controller_templates"]:
        assert template["project"] in projects
        assert os.path.exists(os.path.join(ROOT, template["playbook"])), template["name"]


def test_survey_variables_are_ones_the_playbooks_read(config):
    playbooks = ""
    for base, _dirs, files in os.walk(os.path.join(COLLECTION, "playbooks")):
        playbooks += "".join(open(os.path.join(base, name)).read() for name in files if name.endswith(".yml"))
    for template in config["controller_templates"]:
        for question in (template.get("survey_spec") or {}).get("spec", []):
            # the table knobs are read by the filter validated_specs, not named in a playbook
            assert (question["variable"] in PLAY_VARIABLES
                    or re.search(r"\b%s\b" % question["variable"], playbooks)), question["variable"]
            if question["type"] == "integer":
                assert question["min"] <= question["default"] <= question["max"]


def test_schedules_launch_known_templates_with_a_valid_rrule(config):
    names = {t["name"] for t in config["controller_templates"]}
    for schedule in config["controller_schedules"]:
        assert schedule["unified_job_template"] in names
        assert re.match(r"DTSTART;TZID=\w+:\d{8}T\d{6} RRULE:FREQ=\w+", schedule["rrule"])


def test_maintenance_runs_hourly(config):
    templates = dict((t["name"], t) for t in config["controller_templates"])
    maintenance = [t for t in templates.values() if t["playbook"] == "playbooks/maintenance.yml"]
    assert len(maintenance) == 1 and not maintenance[0]["allow_simultaneous"]
    schedules = [s for s in config["controller_schedules"] if s["unified_job_template"] == maintenance[0]["name"]]
    assert len(schedules) == 1 and "FREQ=HOURLY;INTERVAL=1" in schedules[0]["rrule"]
    questions = [q["variable"] for q in maintenance[0]["survey_spec"]["spec"]]
    assert set(schedules[0]["extra_data"]) == set(questions)


def test_phase4_is_a_template_that_asks_for_its_table(config):
    phase4 = [t for t in config["controller_templates"] if t["playbook"] == "playbooks/phase4_optimize.yml"]
    assert len(phase4) == 1 and phase4[0]["ask_job_type_on_launch"] and not phase4[0]["allow_simultaneous"]
    questions = [q["variable"] for q in phase4[0]["survey_spec"]["spec"]]
    assert questions[0] == "partitioning_only" and "partitioning_runbook_schema" in questions


FLEET_VARIABLES = {"partitioning_only", "partitioning_canary", "partitioning_serial",
                   "partitioning_max_fail_percentage", "partitioning_any_errors_fatal"}
READ_ONLY_PLAYBOOKS = {"playbooks/status.yml"}


def _survey_variables(template):
    return {q["variable"] for q in (template.get("survey_spec") or {}).get("spec", [])}


def test_every_playbook_has_a_job_template_in_the_execution_environment(config):
    templates = {t["playbook"]: t for t in config["controller_templates"]}
    playbooks = sorted("playbooks/" + name for name in os.listdir(os.path.join(ROOT, "playbooks"))
                       if name.endswith(".yml"))
    for playbook in playbooks:
        assert playbook in templates, (
            "%s has no job template in awx/controller_config.yml: add one (playbooks/README.md, "
            "'A new playbook')" % playbook)
    environments = {e["name"] for e in config["controller_execution_environments"]}
    for template in templates.values():
        assert template["execution_environment"] in environments, template["name"]


def test_every_template_that_changes_a_database_asks_how_to_roll_out(config):
    for template in config["controller_templates"]:
        if template["playbook"] not in READ_ONLY_PLAYBOOKS:
            assert template["survey_enabled"] and FLEET_VARIABLES <= _survey_variables(template), template["name"]
            assert template["ask_limit_on_launch"], template["name"]
        for question in (template.get("survey_spec") or {}).get("spec", []):
            if question["type"] == "multiplechoice":
                assert question["default"] in question["choices"], question["variable"]


# --- the execution environment (execution-environment.yml) -------------------------------------

EE_FILE = os.path.join(ROOT, "execution-environment.yml")


@pytest.fixture(scope="module")
def ee():
    with open(EE_FILE) as f:
        return yaml.safe_load(f)


def test_the_execution_environment_carries_the_collection_and_its_requirements(ee):
    assert ee["version"] == 3
    assert ee["dependencies"]["ansible_core"]["package_pip"].startswith("ansible-core")
    built = dict((f["dest"], f["src"]) for f in ee["additional_build_files"])
    for requirement in ee["dependencies"]["galaxy"]["collections"]:
        assert requirement["type"] == "dir"
        assert os.path.samefile(os.path.join(ROOT, built[requirement["name"]]), COLLECTION)
    # the collection declares what it needs where it runs; the project's requirements include it
    with open(os.path.join(COLLECTION, "meta", "execution-environment.yml")) as f:
        needs = yaml.safe_load(f)["dependencies"]
    for kind in ("python", "system"):
        assert os.path.exists(os.path.join(COLLECTION, needs[kind])), needs[kind]
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        assert "-r %s/requirements.txt" % os.path.relpath(COLLECTION, ROOT) in f.read().splitlines()


def test_ansible_builder_makes_a_build_context_that_installs_the_collection(tmp_path):
    """``ansible-builder create`` (no container runtime needed), then what the image's galaxy stage
    does: install the context's requirements offline; its introspection finds psycopg2 and pg_dump."""
    builder = os.path.join(os.path.dirname(sys.executable), "ansible-builder")
    if not os.path.exists(builder):
        pytest.skip("ansible-builder is not installed in this Python environment")
    context = tmp_path / "context"
    subprocess.run([builder, "create", "-f", EE_FILE, "--context", str(context)], cwd=ROOT, check=True,
                   capture_output=True, text=True)
    build = context / "_build"
    galaxy = os.path.join(os.path.dirname(sys.executable), "ansible-galaxy")
    installed = tmp_path / "collections"
    subprocess.run([galaxy, "collection", "install", "--offline", "-r", "requirements.yml", "-p", str(installed)],
                   cwd=build, check=True, capture_output=True, text=True)
    collection = installed / "ansible_collections" / "dbops" / "partitioning"
    assert (collection / "playbooks" / "phase1_prepare.yml").exists()
    assert (collection / "plugins" / "modules" / "batch_copy.py").exists()
    found = subprocess.run([builder, "introspect", str(installed)], check=True, capture_output=True, text=True).stdout
    needs = yaml.safe_load(found.split("\n", 1)[1])
    assert any(p.startswith("psycopg2") for p in needs["python"]), found
    assert any(p.startswith("postgresql") for p in needs["system"]), found
