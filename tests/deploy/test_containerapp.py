"""deploy/azure-container-apps/containerapp.yaml: the shape `az containerapp create --yaml` takes, checked by hand.

There is no offline schema for it, so this checks what matters for this service: the ingress
port, the three probes on /healthz within Container Apps' limits, a scale rule, resources that
the Consumption plan offers, and settings the app really reads.
"""

from __future__ import annotations

from typing import Any

from tests.deploy.manifests import CONTAINER_PORT, DEPLOY, load_one, settings_env_names

APP = DEPLOY / "azure-container-apps" / "containerapp.yaml"
# Container Apps' documented bounds for probe fields.
PROBE_LIMITS = {
    "initialDelaySeconds": (0, 60),
    "periodSeconds": (1, 240),
    "timeoutSeconds": (1, 240),
    "failureThreshold": (1, 10),
}


def app() -> dict[str, Any]:
    return load_one(APP)


def container() -> dict[str, Any]:
    (only,) = app()["properties"]["template"]["containers"]
    return only


def test_it_is_a_container_app_with_ingress_on_the_service_port() -> None:
    doc = app()
    assert doc["type"] == "Microsoft.App/containerApps"
    ingress = doc["properties"]["configuration"]["ingress"]
    assert ingress["targetPort"] == CONTAINER_PORT
    assert ingress["transport"] in ("http", "auto")
    assert sum(rule["weight"] for rule in ingress["traffic"]) == 100
    assert container()["image"]


def test_startup_readiness_and_liveness_probe_healthz_within_the_platform_limits() -> None:
    probes = {probe["type"]: probe for probe in container()["probes"]}
    assert set(probes) == {"Startup", "Readiness", "Liveness"}
    for kind, probe in probes.items():
        assert probe["httpGet"] == {"path": "/healthz", "port": CONTAINER_PORT}, kind
        for field, (low, high) in PROBE_LIMITS.items():
            if field in probe:
                assert low <= probe[field] <= high, f"{kind}.{field}"
    startup = probes["Startup"]
    assert startup.get("initialDelaySeconds", 0) + startup["periodSeconds"] * startup["failureThreshold"] >= 20


def test_it_scales_on_http_concurrency_or_cpu() -> None:
    scale = app()["properties"]["template"]["scale"]
    assert 0 <= scale["minReplicas"] <= scale["maxReplicas"]
    rules = scale["rules"]
    assert rules and len({rule["name"] for rule in rules}) == len(rules)
    kinds = set()
    for rule in rules:
        if "http" in rule:
            assert int(rule["http"]["metadata"]["concurrentRequests"]) >= 1
            kinds.add("http")
        elif "custom" in rule and rule["custom"]["type"] == "cpu":
            assert rule["custom"]["metadata"]["type"] == "Utilization"
            assert 0 < int(rule["custom"]["metadata"]["value"]) < 100
            kinds.add("cpu")
    assert kinds, "an HTTP or CPU scale rule"


def test_resources_are_a_consumption_plan_pair() -> None:
    resources = container()["resources"]
    cpu = float(resources["cpu"])
    assert resources["memory"] == f"{cpu * 2:g}Gi", "the Consumption plan pairs each vCPU with 2 GiB"


def test_the_environment_sets_only_settings_the_app_reads_and_shutdown_fits_the_grace_period() -> None:
    env = {item["name"]: item["value"] for item in container()["env"]}
    assert env and set(env) <= settings_env_names()
    grace = app()["properties"]["template"]["terminationGracePeriodSeconds"]
    assert grace >= int(env["DRAIN_SECONDS"]) + int(env["GRACEFUL_TIMEOUT_SECONDS"]) + 5
