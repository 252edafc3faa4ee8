"""The Nomad job files parse, have the shape operators rely on, and pass only flags and
environment variables `meridian` really has. (No Nomad binary here: python-hcl2 reads them.)"""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer

from meridian.cli import app
from tests.deploy.hcl import ROOT, block, labelled, load

NOMAD = ROOT / "nomad"


def _duration_s(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smh])", text))


def _command(*path: str) -> Any:
    """The click command behind `meridian PATH…` (typer may bring its own click: duck-typed)."""
    command: Any = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def _flags(command: Any) -> set[str]:
    return {opt for p in command.params for opt in p.opts}


def _envvars(command: Any) -> set[str]:
    return {p.envvar for p in command.params if isinstance(p.envvar, str)}


def _only(job_file: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    items = labelled(job_file, kind)
    assert len(items) == 1, items.keys()
    return next(iter(items.items()))


def _check_cli(task: dict[str, Any], command: Any, args: list[str]) -> None:
    flags = [a for a in args if a.startswith("--")]
    assert flags, "the task passes no flags"
    unknown = set(flags) - _flags(command)
    assert not unknown, f"flags the command does not have: {unknown}"
    template = block(task, "template")
    assert template["env"] is True
    env_names = set(re.findall(r"^\s*([A-Z_]+)=", template["data"], re.M))
    assert env_names, "the template sets no environment"
    assert env_names <= _envvars(command), f"variables the command does not read: {env_names - _envvars(command)}"


def _declared_vars_cover_uses(job_file: dict[str, Any], path: str) -> None:
    used = set(re.findall(r"var\.([a-z_]+)", (NOMAD / path).read_text()))
    assert used <= set(labelled(job_file, "variable")), used - set(labelled(job_file, "variable"))


@pytest.fixture(scope="module")
def control_file() -> dict[str, Any]:
    return load(NOMAD / "control.nomad.hcl")


@pytest.fixture(scope="module")
def edge_file() -> dict[str, Any]:
    return load(NOMAD / "edge.nomad.hcl")


def test_control_job_is_a_service_of_two_or_more_instances(control_file: dict[str, Any]) -> None:
    name, job = _only(control_file, "job")
    assert name == "meridian-control" and job["type"] == "service"
    _, group = _only(job, "group")
    assert group["count"] == "${var.instances}"
    assert labelled(control_file, "variable")["instances"]["default"] >= 2
    assert {"operator": "distinct_hosts", "value": "true"} in group["constraint"]


def test_control_job_rolls_out_through_a_canary_and_reverts_failures(control_file: dict[str, Any]) -> None:
    update = block(_only(control_file, "job")[1], "update")
    assert update["canary"] >= 1 and update["max_parallel"] == 1
    assert update["auto_revert"] is True and update["health_check"] == "checks"


def test_control_job_checks_healthz(control_file: dict[str, Any]) -> None:
    _, group = _only(_only(control_file, "job")[1], "group")
    check = block(block(group, "service"), "check")
    assert (check["type"], check["path"]) == ("http", "/healthz")


def test_control_job_reads_the_database_url_from_a_nomad_variable(control_file: dict[str, Any]) -> None:
    _, group = _only(_only(control_file, "job")[1], "group")
    _, task = _only(group, "task")
    data = block(task, "template")["data"]
    assert re.search(r'nomadVar "nomad/jobs/meridian-control"', data.replace('\\"', '"'))
    assert "MERIDIAN_DATABASE_URL={{ .database_url }}" in data
    assert "postgres" not in str(task["config"]), "a database URL written into the job"


def test_control_job_passes_only_real_flags_and_settings(control_file: dict[str, Any]) -> None:
    _, group = _only(_only(control_file, "job")[1], "group")
    _, task = _only(group, "task")
    config = block(task, "config")
    assert config["args"][:2] == ["control", "serve"]
    _check_cli(task, _command("control", "serve"), config["args"])
    _declared_vars_cover_uses(control_file, "control.nomad.hcl")


def test_edge_job_is_a_system_job_of_one_region_datacenter(edge_file: dict[str, Any]) -> None:
    name, job = _only(edge_file, "job")
    assert name == "meridian-edge" and job["type"] == "system"
    assert job["datacenters"] == ["${var.datacenter}"]
    assert block(job, "meta")["meridian_region"] == "${var.region}"


def test_edge_job_holds_one_edge_per_host_on_a_static_port(edge_file: dict[str, Any]) -> None:
    _, group = _only(_only(edge_file, "job")[1], "group")
    assert {"operator": "distinct_hosts", "value": "true"} in group["constraint"]
    _, port = _only(block(group, "network"), "port")
    assert port["static"] == "${var.port}"
    assert isinstance(labelled(edge_file, "variable")["port"]["default"], int)


def test_edge_job_keeps_replica_and_journal_on_a_host_volume(edge_file: dict[str, Any]) -> None:
    _, group = _only(_only(edge_file, "job")[1], "group")
    volume_name, volume = _only(group, "volume")
    assert volume["type"] == "host" and volume["read_only"] is False
    _, task = _only(group, "task")
    mount = block(task, "volume_mount")
    assert mount["volume"] == volume_name
    args = block(task, "config")["args"]
    assert args[args.index("--data-dir") + 1].startswith(mount["destination"] + "/")


def test_edge_job_runs_process_backends_raw_and_drains_slowly(edge_file: dict[str, Any]) -> None:
    _, group = _only(_only(edge_file, "job")[1], "group")
    _, task = _only(group, "task")
    assert task["driver"] == "raw_exec"
    assert task["kill_signal"] == "SIGTERM"
    assert _duration_s(task["kill_timeout"]) >= 300, "draining WebSockets needs minutes, not Nomad's 5s"
    drain = re.search(r"MERIDIAN_EDGE_SHUTDOWN_DRAIN_S=(\d+)", block(task, "template")["data"])
    assert drain is not None, "the edge must drain itself on SIGTERM"
    # The edge's own drain ends first, leaving time to stop what is left before Nomad's SIGKILL.
    assert 0 < int(drain.group(1)) <= _duration_s(task["kill_timeout"]) - 30
    check = block(block(group, "service"), "check")
    assert check["path"] == "/healthz"


def test_edge_job_is_pinned_to_nodes_by_version_for_node_by_node_rollout(edge_file: dict[str, Any]) -> None:
    _, job = _only(edge_file, "job")
    assert block(job, "meta")["meridian_edge_version"] == "${var.edge_version}"
    assert {"attribute": "${meta.meridian_edge_version}", "value": "${var.edge_version}"} in job["constraint"]
    assert block(job, "update")["max_parallel"] == 1


def test_edge_job_passes_only_real_flags_and_settings(edge_file: dict[str, Any]) -> None:
    _, group = _only(_only(edge_file, "job")[1], "group")
    _, task = _only(group, "task")
    args = block(task, "config")["args"]
    assert args[:2] == ["edge", "serve"]
    _check_cli(task, _command("edge", "serve"), args)
    _declared_vars_cover_uses(edge_file, "edge.nomad.hcl")
    assert "MERIDIAN_EDGE_TOKEN" in block(task, "template")["data"], "the edge token must come from a variable"
