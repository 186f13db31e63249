"""The KubeRay `RayCluster` of deploy/kubernetes/raycluster.yaml: valid against KubeRay's CRD schema (with unknown
fields refused, as the API server's strict field validation does), and in step with the rest of the project: the
model location's image and Ray version, the secret the Dagster pods read, the address the docs tell a team to set."""

import copy
import json
import re
import tomllib

import jsonschema
import pytest
import yaml

from conftest import ROOT

MANIFEST = ROOT / "deploy" / "kubernetes" / "raycluster.yaml"
SCHEMA = ROOT / "deploy" / "kubernetes" / "raycluster.schema.json"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def test_the_raycluster_follows_kuberays_schema(validator, cluster):
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(cluster)]
    assert errors == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "workerGroupSpecs", 0, "maxReplica"), 4),  # misspelt
        (("spec", "workerGroupSpecs", 0, "replicas"), "two"),  # wrong type
        (("spec", "headGroupSpec", "template", "spec", "containers", 0, "imagePullPolcy"), "Always"),  # Kubernetes'
        (("spec", "autoscalerOptions", "upscalingMode"), "Fast"),  # not one of KubeRay's modes
    ],
    ids=["misspelt-field", "wrong-type", "misspelt-pod-field", "unknown-enum-value"],
)
def test_the_schema_refuses_what_the_api_server_would(validator, cluster, path, value):
    broken = copy.deepcopy(cluster)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert list(validator.iter_errors(broken)), f"{path} = {value!r} was accepted"


def test_the_cluster_runs_the_model_location_with_its_ray_and_the_pipelines_secret(cluster):
    pins = tomllib.loads((ROOT / "2_model_code_location" / "pyproject.toml").read_text())["project"]["dependencies"]
    ray_pin = next(re.fullmatch(r"ray\[[^]]*\]==(.+)", pin).group(1) for pin in pins if pin.startswith("ray["))
    assert cluster["spec"]["rayVersion"] == ray_pin
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    for group in groups:
        (container,) = group["template"]["spec"]["containers"]
        assert re.search(r"/ml-pipeline-2-model:", container["image"]), container["image"]
        assert {"secretRef": {"name": "ml-pipeline-env"}} in container["envFrom"]  # storage and its credentials
    (gpu,) = cluster["spec"]["workerGroupSpecs"]
    (worker,) = gpu["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # the head trains nothing


def test_the_documented_address_is_the_head_service_kuberay_creates(cluster):
    # KubeRay names the head's service <cluster>-head-svc; the job API is the dashboard's port.
    address = f"http://{cluster['metadata']['name']}-head-svc:8265"
    assert f"ML_PIPELINE_RAY_ADDRESS={address}" in MANIFEST.read_text()
    assert address in (ROOT / "docs" / "distributed-training.md").read_text()
    ports = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    assert {"name": "dashboard", "containerPort": 8265} in ports
