"""The model server on Kubernetes (deploy/kubernetes/serving/): each manifest valid against Kubernetes' own schemas
(kubernetes-validate, offline), with unknown fields refused as the API server's strict field validation refuses them,
on the oldest Kubernetes they are written for and the newest; the manifests in step with each other, the serving
image, the secret and the server's drain time; and the container run for real as the Deployment describes it (read-
only root filesystem, user 10001, no capabilities, its emptyDir its only writable place, its resources): its probes
answer, the API key comes from the secret, and SIGTERM lets a stream in flight run to its end."""

import copy
import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml

from conftest import ROOT
from pipeline_cli.derived_files import (
    API_KEYS_SETTING,
    KUBERNETES_SERVING_DIR,
    KUBERNETES_SERVING_FILES,
    REGISTRY,
    SECRET,
    SERVING_IMAGE,
)
from shared_code_location.runtime.net import free_port, http_ok, wait_until

#: The oldest Kubernetes the manifests are written for, and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.30", "latest")


def manifest(name: str) -> dict:
    return yaml.safe_load((ROOT / KUBERNETES_SERVING_DIR / name).read_text())


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    """Each manifest by kind."""
    return {document["kind"]: document for document in map(manifest, KUBERNETES_SERVING_FILES)}


def validate(document: dict, version: str) -> None:
    """Kubernetes' schema of the document's kind at `version`, unknown fields refused; raises what it finds."""
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    kubernetes_validate.validate(document, latest_version() if version == "latest" else version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", KUBERNETES_SERVING_FILES)
def test_each_manifest_follows_kubernetes_schemas(name, version):
    validate(manifest(name), version)


CONTAINER = ("spec", "template", "spec", "containers", 0)


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("Deployment", (*CONTAINER, "readinesProbe"), {"httpGet": {"path": "/ready", "port": "http"}}),  # misspelt
        ("Deployment", (*CONTAINER, "securityContext", "readOnlyRootFileSystem"), True),  # misspelt, case
        ("Deployment", ("spec", "replicas"), "two"),  # wrong type
        ("Service", ("spec", "ports", 0, "targetport"), "http"),  # misspelt
        ("HorizontalPodAutoscaler", ("spec", "minReplica"), 2),  # misspelt
        ("PodDisruptionBudget", ("spec", "maxUnavailable"), [1]),  # wrong type
    ],
)
def test_the_schemas_refuse_what_the_api_server_would(manifests, kind, path, value):
    from kubernetes_validate import ValidationError

    broken = copy.deepcopy(manifests[kind])
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValidationError):
        validate(broken, "latest")


def _container(manifests) -> dict:
    (container,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def test_the_deployment_serves_from_the_serving_image_with_probes_limits_and_no_privileges(manifests):
    deployment = manifests["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = _container(manifests)
    assert deployment["spec"]["replicas"] >= 2
    assert container["image"] == f"{REGISTRY}/{SERVING_IMAGE}:latest"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert set(container["resources"]["requests"]) == set(container["resources"]["limits"]) == {"cpu", "memory"}
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    empty_dirs = {volume["name"] for volume in pod["volumes"] if "emptyDir" in volume}
    assert {mount["mountPath"] for mount in container["volumeMounts"] if mount["name"] in empty_dirs} == {"/tmp"}


def test_the_service_autoscaler_and_budget_select_the_deployments_pods(manifests):
    deployment = manifests["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert manifests["Service"]["spec"]["selector"].items() <= labels.items()
    assert manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = manifests["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert manifests["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2
    # One replica at most is evicted at a time, and a voluntary disruption always leaves one serving.
    assert manifests["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    (port,) = manifests["Service"]["spec"]["ports"]
    (container_port,) = _container(manifests)["ports"]
    assert port["targetPort"] == container_port["name"] and container_port["containerPort"] == port["port"]
    assert f"--port {port['port']}" in " ".join(_container(manifests)["args"])


def test_a_stop_gives_the_server_time_to_finish_its_streams(manifests):
    """preStop keeps the pod serving while it leaves the Service's endpoints; then SIGTERM, and the server drains
    for --drain-seconds; the grace period covers both, with time to exit, before Kubernetes' SIGKILL."""
    container = _container(manifests)
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    args = container["args"]
    drain = float(args[args.index("--drain-seconds") + 1])
    grace = manifests["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= float(pre_stop[1]) + drain + 5


def test_the_release_storage_and_the_api_keys_come_from_the_pipelines_secret(manifests):
    container = _container(manifests)
    assert container["envFrom"] == [{"secretRef": {"name": SECRET}}]  # ML_PIPELINE_OUTPUT_DIR and its S3 settings
    (keys,) = [variable for variable in container["env"] if variable["name"] == API_KEYS_SETTING]
    # Required (not `optional`): without keys the pod does not start, rather than serve anyone.
    assert keys["valueFrom"]["secretKeyRef"] == {"name": SECRET, "key": API_KEYS_SETTING}
    secret = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "secret.example.yaml").read_text())
    assert secret["metadata"]["name"] == SECRET
    assert {"ML_PIPELINE_OUTPUT_DIR", "ML_PIPELINE_S3_ENDPOINT_URL", API_KEYS_SETTING} <= set(secret["stringData"])


# ---- The Deployment's container, run by the container engine as Kubernetes would run it -------------------------


def engine_flags(manifests) -> list[str]:
    """`run` flags for what the pod spec asks of its container: user, read-only root with a tmpfs for each emptyDir,
    no capabilities or privilege escalation, and its resource limits."""
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    container = _container(manifests)
    security = pod["securityContext"] | container["securityContext"]
    flags = ["--user", f"{security['runAsUser']}:{security['runAsGroup']}"]
    if security["readOnlyRootFilesystem"]:
        flags.append("--read-only")
    sizes = {v["name"]: v["emptyDir"].get("sizeLimit") for v in pod["volumes"] if "emptyDir" in v}
    for mount in container["volumeMounts"]:
        size = sizes[mount["name"]]
        flags += ["--tmpfs", mount["mountPath"] + (f":rw,size={size.removesuffix('i').lower()}" if size else "")]
    flags += [f"--cap-drop={c}" for c in security["capabilities"]["drop"]]
    if not security["allowPrivilegeEscalation"]:
        flags += ["--security-opt", "no-new-privileges"]
    limits = container["resources"]["limits"]
    flags += ["--cpus", str(limits["cpu"]), "--memory", limits["memory"].removesuffix("i").lower()]
    return flags


def _stream(port: int, key: str) -> http.client.HTTPResponse:
    """A long streamed completion (8 choices of 1000 tokens with their log-probabilities: megabytes, more than the
    sockets hold while the client does not read), its first event read."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = {"model": "char-transformer", "prompt": "ROMEO:\n", "stream": True}
    body |= {"max_tokens": 1000, "n": 8, "logprobs": 5}  # about 4 MB of events
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    connection.request("POST", "/v1/completions", json.dumps(body), headers)
    response = connection.getresponse()
    assert response.status == 200, response.read()[:500]
    assert response.readline().startswith(b"data: ")
    return response


def _refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            connection.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            return not connection.recv(1)
    except OSError:
        return True


def test_the_deployments_container_serves_read_only_and_finishes_its_streams_on_sigterm(
    manifests, images, tiny_pipeline
):
    from pipeline_cli.images import run

    _, folder, result = tiny_pipeline
    assert result.returncode == 0, result.stderr
    container = _container(manifests)
    key, port = "test-key-1", free_port()
    name = f"serving-kubernetes-test-{port}"
    # The secret's settings: the releases (a folder here, mounted read-only; object storage in a cluster), the keys.
    env = {"ML_PIPELINE_OUTPUT_DIR": "/data/releases", API_KEYS_SETTING: f"other-key,{key}"}
    command = [*container["command"], *container["args"]]
    run("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:{container['ports'][0]['containerPort']}",
        "-v", f"{folder / 'releases'}:/data/releases:ro", *(f"--env={k}={v}" for k, v in env.items()),
        *engine_flags(manifests), f"{SERVING_IMAGE}:latest", *command)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        probes = [container[probe]["httpGet"]["path"] for probe in ("startupProbe", "livenessProbe", "readinessProbe")]
        ready = wait_until(lambda: all(http_ok(url + path) for path in probes), 90)
        assert ready, run("logs", name, check=False).stdout + run("logs", name, check=False).stderr
        # The probes are open (above); the model is not, without a key of the secret's.
        models = urllib.request.Request(url + "/v1/models")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(models, timeout=10)
        assert refused.value.code == 401
        models.add_header("authorization", f"Bearer {key}")
        assert json.load(urllib.request.urlopen(models, timeout=10))["data"][0]["id"] == "char-transformer"
        response = _stream(port, key)
        grace = manifests["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        stopped: dict[str, float] = {}
        started = time.monotonic()

        def stop() -> None:  # SIGTERM (to PID 1, the server itself: no init, as in a pod), SIGKILL after the grace
            run("stop", "-t", str(grace), name)
            stopped["after"] = time.monotonic() - started

        stopper = threading.Thread(target=stop)
        stopper.start()
        assert wait_until(lambda: _refuses_connections(port), 10), "the server went on accepting connections"
        assert stopper.is_alive()  # it waits for the stream in flight
        events = [event.strip() for event in response.read().split(b"\n\n") if event.strip()]
        assert events[-1] == b"data: [DONE]"  # the stream ran to its end
        finished = [json.loads(e.removeprefix(b"data: "))["choices"][0] for e in events[:-1]]
        assert sorted(c["index"] for c in finished if c["finish_reason"] == "length") == list(range(8))
        stopper.join(grace + 10)
        exit_code = int(run("inspect", "--format", "{{.State.ExitCode}}", name).stdout)
        print(f"\nstopped {stopped['after']:.1f} s after SIGTERM (grace {grace} s), exit code {exit_code}")
        assert stopped["after"] < grace and exit_code != 137  # it exited by itself, not by SIGKILL
    finally:
        run("rm", "-f", name, check=False)
