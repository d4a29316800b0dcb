"""awx/controller_config.yml must describe job templates that can actually run."""
import os
import re

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
    assert questions == ["partitioning_only", "partitioning_runbook_schema"]
