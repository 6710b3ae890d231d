"""The plan document: one typed, versioned shape, its JSON Schema kept in the repo and honoured."""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siokit import plan_schema, planner
from siokit.planner import HostFacts, Plan, PlanError, Target

SCHEMA = json.loads(plan_schema.SCHEMA_PATH.read_text())
THIS_HOST = HostFacts(cores=2, memory_gib=23.4, nofile_hard=20000, somaxconn=4096)


def test_schema_in_the_repo_is_the_generated_one() -> None:
    """Edit the dataclasses, then: python -m siokit.plan_schema > siokit/plan.schema.json"""
    assert plan_schema.SCHEMA_PATH.read_text() == plan_schema.schema_text()


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@settings(max_examples=150, deadline=None)
@given(
    sockets=st.integers(1, 400_000),
    app_hosts=st.integers(1, 8),
    source_ips=st.integers(1, 16),
    colocated=st.booleans(),
    nofile=st.sampled_from([20000, 65536, 1_048_576]),
)
def test_every_plan_validates_and_reads_back(
    sockets: int, app_hosts: int, source_ips: int, colocated: bool, nofile: int
) -> None:
    host = HostFacts(cores=4, memory_gib=64, nofile_hard=nofile)
    try:
        p = planner.plan(Target(sockets=sockets, app_hosts=app_hosts, source_ips=source_ips, colocated=colocated), host)
    except PlanError:
        return
    doc = json.loads(json.dumps(p.to_dict()))  # what plan.json holds
    jsonschema.validate(doc, SCHEMA)
    assert doc["schema_version"] == planner.SCHEMA_VERSION
    assert Plan.from_dict(doc) == p


def test_schema_catches_a_wrong_document() -> None:
    """The validation can fail: a missing field, a wrong type, an extra field, another version."""
    good = planner.plan(Target(sockets=1000), THIS_HOST).to_dict()
    bad = [
        {k: v for k, v in good.items() if k != "ping_interval"},
        {**good, "uwsgi": {**good["uwsgi"], "async_cores": "many"}},
        {**good, "nginx": {**good["nginx"], "extra": 1}},
        {**good, "schema_version": planner.SCHEMA_VERSION + 1},
    ]
    for doc in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, SCHEMA)


def test_from_dict_refuses_another_version_and_names_both() -> None:
    doc = {**planner.plan(Target(sockets=1000), THIS_HOST).to_dict(), "schema_version": 0}
    with pytest.raises(PlanError, match=rf"schema_version 0, this siokit reads {planner.SCHEMA_VERSION}"):
        Plan.from_dict(doc)


def test_from_dict_refuses_an_unknown_field() -> None:
    doc = planner.plan(Target(sockets=1000), THIS_HOST).to_dict()
    doc["uwsgi"]["extra"] = {}
    with pytest.raises(PlanError, match=r"UwsgiPlan: unknown field\(s\) \['extra'\]"):
        Plan.from_dict(doc)


def test_the_document_says_what_it_was_computed_from() -> None:
    doc = planner.plan_from_mapping({"sockets": 5000, "ping_interval": 60, "app": THIS_HOST.to_dict()})
    assert doc["target"]["sockets"] == 5000
    assert doc["target"]["ping_interval"] == 60
    assert doc["ping_interval"] == 60
    assert doc["target"]["port_range"] == [1024, 65535]


def test_an_unknown_planner_input_is_refused() -> None:
    """A typo in siokit_plan_input would otherwise pin nothing, silently."""
    with pytest.raises(PlanError, match=r"unknown planner input \['ping_intervall'\]"):
        planner.plan_from_mapping({"sockets": 5000, "ping_intervall": 60, "app": THIS_HOST.to_dict()})
