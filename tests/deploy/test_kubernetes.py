"""deploy/kubernetes/: every manifest against the real Kubernetes schemas, and wired together right."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.manifests import CONTAINER_PORT, KUBERNETES, REPO, load_all, load_one, settings_env_names

# The oldest release these manifests promise to work on (autoscaling/v2, policy/v1 and probes as
# used here are all older) and the newest schema kubernetes-validate ships.
VERSIONS = ["1.28.0", kubernetes_validate.utils.latest_version()]


def resources() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in sorted(KUBERNETES.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_all(path)
    ]


def by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [doc for _, doc in resources() if doc["kind"] == kind]
    return doc


def pod_labels() -> dict[str, str]:
    return by_kind("Deployment")["spec"]["template"]["metadata"]["labels"]


def container() -> dict[str, Any]:
    (only,) = by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    return only


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_strictly_against_the_kubernetes_schemas(version: str) -> None:
    found = resources()
    kinds = sorted(doc["kind"] for _, doc in found)
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    for path, doc in found:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(
                f"{path.name} ({doc['kind']}) is invalid for Kubernetes {version}: "
                f"{error.message} at {list(error.path)}"
            )


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(containerPort="eight thousand"),
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(
            readinesProbe={"httpGet": {"path": "/healthz"}}
        ),
        lambda d: d["spec"].pop("selector"),
    ],
    ids=["wrong type", "misspelt field", "missing required field"],
)
def test_the_validator_really_rejects_a_broken_deployment(break_it) -> None:  # type: ignore[no-untyped-def]
    broken = copy.deepcopy(by_kind("Deployment"))
    break_it(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_every_probe_asks_healthz_on_the_service_port() -> None:
    spec = container()
    (port,) = spec["ports"]
    assert port["containerPort"] == CONTAINER_PORT
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = spec[probe]["httpGet"]
        assert get["path"] == "/healthz", probe
        assert get["port"] in (port["name"], port["containerPort"]), probe
    startup = spec["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30, (
        "leave a slow node time to load and warm the model"
    )
    # Liveness must not kill a pod that is merely busy: several slow answers in a row, not one.
    assert spec["livenessProbe"]["failureThreshold"] * spec["livenessProbe"]["periodSeconds"] >= 30


def test_termination_leaves_in_flight_requests_time_to_finish() -> None:
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    spec = container()
    command = spec["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = int(command[1])
    env = {item["name"]: item["value"] for item in spec["env"]}
    drain, graceful = int(env["DRAIN_SECONDS"]), int(env["GRACEFUL_TIMEOUT_SECONDS"])
    assert pre_stop >= 3, "give the endpoints time to drop the pod before SIGTERM"
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + graceful + 5


def test_the_container_is_locked_down() -> None:
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    security = container()["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]
    uid = re.search(r"^ARG UID=(\d+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert uid and pod["securityContext"]["runAsUser"] == int(uid.group(1)), "the pod's user is the image's"
    assert not pod.get("volumes"), "the service writes nothing: no scratch volume needed"


def test_resources_are_bounded_and_the_cpu_limit_is_whole_cpus() -> None:
    resources_ = container()["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources_[kind]), kind
    # WORKERS follows the cgroup quota rounded up: a whole number of CPUs wastes none of it.
    assert re.fullmatch(r"\d+", str(resources_["limits"]["cpu"]))
    assert resources_["requests"]["cpu"] == resources_["limits"]["cpu"]


def test_the_environment_sets_only_settings_the_app_reads() -> None:
    names = [item["name"] for item in container()["env"]]
    assert names and set(names) <= settings_env_names()
    assert len(names) == len(set(names))


def test_prometheus_scrapes_metrics_on_the_container_port() -> None:
    annotations = by_kind("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(CONTAINER_PORT)


def test_service_hpa_and_pdb_point_at_the_deployment() -> None:
    deployment = by_kind("Deployment")
    labels = pod_labels()
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)

    service = by_kind("Service")
    assert selects(service["spec"]["selector"], labels)
    port_names = {port["name"] for port in container()["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names | {CONTAINER_PORT}

    hpa = by_kind("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        deployment["metadata"]["name"],
    )
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert 0 < metric["resource"]["target"]["averageUtilization"] < 100
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]

    pdb = by_kind("PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    # With the HPA's minimum, a drain can always proceed yet never takes the last pod.
    assert pdb["spec"].get("maxUnavailable", 0) < hpa["spec"]["minReplicas"]


def test_the_kustomization_lists_every_manifest_and_maps_the_image() -> None:
    kustomization = load_one(KUBERNETES / "kustomization.yaml")
    listed = kustomization["resources"]
    assert sorted(listed) == sorted({path.name for path, _ in resources()})
    assert all((KUBERNETES / name).is_file() for name in listed)
    image_name = container()["image"].split(":")[0]
    assert image_name in {entry["name"] for entry in kustomization["images"]}
