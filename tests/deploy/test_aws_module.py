"""infra/terraform/aws, read with python-hcl2 (no AWS provider can be downloaded here): per region
a VPC, a Nomad client autoscaling group behind a load balancer checking /healthz, security groups;
one Global Accelerator with a listener and an endpoint group per region, client IPs preserved;
all fed by the region catalog, and agreeing with nomad/edge.nomad.hcl."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.deploy.hcl import ROOT, block, labelled, load, load_module

AWS = ROOT / "infra" / "terraform" / "aws"


@pytest.fixture(scope="module")
def root() -> dict[str, list[Any]]:
    return load_module(AWS)


@pytest.fixture(scope="module")
def region() -> dict[str, list[Any]]:
    return load_module(AWS / "region")


def _resources(module: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    return labelled(module, "resource", labels=2)


def test_the_catalog_module_feeds_the_root(root: dict[str, list[Any]]) -> None:
    catalog = labelled(root, "module")["catalog"]
    assert catalog["source"] == "../modules/region-catalog"
    assert catalog["regions"] == "${var.regions}"
    assert catalog["control_url"] == "${var.control_url}"
    locals_ = {k: v for item in root["locals"] for k, v in item.items()}
    assert locals_["regions"] == "${module.catalog.regions}"


def test_one_accelerator_with_two_static_anycast_addresses(root: dict[str, list[Any]]) -> None:
    accelerators = {k: v for k, v in _resources(root).items() if k.startswith("aws_globalaccelerator_accelerator.")}
    assert len(accelerators) == 1
    (name, accelerator), *_ = accelerators.items()
    # IPV4 gets the two static anycast addresses from separate network zones.
    assert accelerator["ip_address_type"] == "IPV4" and accelerator["enabled"] is True
    outputs = labelled(root, "output")
    assert outputs["anycast_addresses"]["value"] == f"${{{name}.ip_sets[0].ip_addresses}}"


def test_a_listener_on_the_accelerator_and_an_endpoint_group_per_region(root: dict[str, list[Any]]) -> None:
    resources = _resources(root)
    listener_name = next(k for k in resources if k.startswith("aws_globalaccelerator_listener."))
    listener = resources[listener_name]
    accelerator_name = next(k for k in resources if k.startswith("aws_globalaccelerator_accelerator."))
    assert listener["accelerator_arn"] == f"${{{accelerator_name}.id}}"
    assert listener["protocol"] == "TCP" and block(listener, "port_range")["from_port"] == 443
    group = resources["aws_globalaccelerator_endpoint_group.region"]
    assert group["for_each"] == "${local.region_modules}"
    assert group["listener_arn"] == f"${{{listener_name}.id}}"
    assert group["endpoint_group_region"] == "${local.regions[each.key].cloud_region}"
    assert (group["health_check_protocol"], group["health_check_path"]) == ("HTTP", "/healthz")
    endpoint = block(group, "endpoint_configuration")
    assert endpoint["endpoint_id"] == "${each.value.lb_arn}"
    assert endpoint["client_ip_preservation_enabled"] is True


def test_every_region_block_has_its_own_provider_and_every_input(
    root: dict[str, list[Any]], region: dict[str, list[Any]]
) -> None:
    configs = [item["aws"] for item in root["provider"] if "aws" in item]
    aliases = {p["alias"]: p["region"] for p in configs if "alias" in p}
    assert [p["region"] for p in configs if "alias" not in p] == ["us-west-2"], "Global Accelerator lives in us-west-2"
    required = {name for name, v in labelled(region, "variable").items() if "default" not in v}
    blocks = {k: v for k, v in labelled(root, "module").items() if v["source"] == "./region"}
    assert len(blocks) == len(aliases) >= 2
    used = set()
    for name, module in blocks.items():
        alias = re.fullmatch(r"\$\{aws\.(\w+)\}", module["providers"]["aws"]).group(1)  # type: ignore[union-attr]
        used.add(alias)
        assert f'r.cloud_region == "{aliases[alias]}"' in module["for_each"].replace('\\"', '"'), name
        assert required <= set(module), f"{name} misses {required - set(module)}"
    assert used == set(aliases)
    merged = {k: v for item in root["locals"] for k, v in item.items()}["region_modules"]
    assert all(f"module.{name}" in merged for name in blocks)


def test_each_region_has_a_vpc_with_public_subnets(region: dict[str, list[Any]]) -> None:
    resources = _resources(region)
    assert resources["aws_vpc.this"]["cidr_block"] == "${var.vpc_cidr}"
    assert resources["aws_subnet.public"]["vpc_id"] == "${aws_vpc.this.id}"
    route = block(resources["aws_route_table.public"], "route")
    assert route["gateway_id"] == "${aws_internet_gateway.this.id}"


def test_each_region_runs_a_nomad_client_autoscaling_group_behind_the_load_balancer(
    region: dict[str, list[Any]],
) -> None:
    resources = _resources(region)
    group = resources["aws_autoscaling_group.nomad_clients"]
    assert group["vpc_zone_identifier"] == "${aws_subnet.public[*].id}"
    assert group["target_group_arns"] == ["${aws_lb_target_group.edge.arn}"]
    assert block(group, "launch_template")["id"] == "${aws_launch_template.nomad_client.id}"
    target = resources["aws_lb_target_group.edge"]
    assert target["port"] == "${var.edge_port}" and target["preserve_client_ip"] is True
    assert block(target, "health_check")["path"] == "/healthz"
    listener = resources["aws_lb_listener.https"]
    assert listener["load_balancer_arn"] == "${aws_lb.edge.arn}"
    assert block(listener, "default_action")["target_group_arn"] == "${aws_lb_target_group.edge.arn}"
    assert labelled(region, "output")["lb_arn"]["value"] == "${aws_lb.edge.arn}"


def test_edges_take_traffic_only_from_the_load_balancer(region: dict[str, list[Any]]) -> None:
    resources = _resources(region)
    edge = resources["aws_security_group.edge"]
    assert resources["aws_launch_template.nomad_client"]["vpc_security_group_ids"] == ["${aws_security_group.edge.id}"]
    edge_port = next(r for r in edge["ingress"] if r["from_port"] == "${var.edge_port}")
    assert edge_port["security_groups"] == ["${aws_security_group.lb.id}"] and "cidr_blocks" not in edge_port
    assert resources["aws_lb.edge"]["security_groups"] == ["${aws_security_group.lb.id}"]


def test_client_configuration_matches_what_the_edge_job_needs() -> None:
    user_data = (AWS / "region" / "nomad-client.hcl.tftpl").read_text()
    job = load(ROOT / "nomad" / "edge.nomad.hcl")
    group = next(iter(labelled(next(iter(labelled(job, "job").values())), "group").values()))
    volume = next(iter(labelled(group, "volume").values()))
    task = next(iter(labelled(group, "task").values()))
    assert f'host_volume "{volume["source"]}"' in user_data
    assert "meridian_edge_version" in user_data
    assert re.search(r'plugin "raw_exec" \{\s*config \{\s*enabled = true', user_data)
    max_kill = re.search(r'max_kill_timeout = "(\w+)"', user_data)
    assert max_kill is not None and max_kill.group(1) == task["kill_timeout"]
