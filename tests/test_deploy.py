"""deploy/: the container image, the compose file and the Kubernetes manifests.

No container engine runs in CI, so the image is tested the way it runs: its Dockerfile is parsed,
and its command line (ENTRYPOINT + CMD, as compose.yaml gives it) is started here with the
environment compose gives it, then its HEALTHCHECK command is run against it. The manifests are
validated against the Kubernetes API schemas of a current release, in strict mode (no unknown
field), and must agree with the image (command, user, port) and with the proxy's settings.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from py_server.config import ENV_NAMES, load_settings, require_safe_exposure

from .conftest import background_process

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
START_TIMEOUT = 60.0
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


# --- the Dockerfile -----------------------------------------------------------------------------


def dockerfile_stages(path: Path) -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, (INSTRUCTION, arguments) with continuations joined, per stage."""
    stages: list[list[tuple[str, str]]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        assert stages, f"{path}: an instruction before FROM: {line}"
        stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def exec_form(arguments: str) -> list[str]:
    """A JSON-array argument (exec form); the shell form is not used in deploy/Dockerfile."""
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value), arguments
    return value


class Image:
    """What the final stage of deploy/Dockerfile makes."""

    def __init__(self, path: Path = DEPLOY / "Dockerfile") -> None:
        self.stages = dockerfile_stages(path)
        self.final = self.stages[-1]

    def all(self, instruction: str, stage: list[tuple[str, str]] | None = None) -> list[str]:
        return [arguments for name, arguments in (stage or self.final) if name == instruction]

    def last(self, instruction: str) -> str | None:
        found = self.all(instruction)
        return found[-1] if found else None

    @property
    def argv(self) -> list[str]:
        """What the container runs: ENTRYPOINT + CMD."""
        entrypoint = self.last("ENTRYPOINT")
        cmd = self.last("CMD")
        return (exec_form(entrypoint) if entrypoint else []) + (exec_form(cmd) if cmd else [])

    @property
    def entrypoint(self) -> list[str]:
        entrypoint = self.last("ENTRYPOINT")
        return exec_form(entrypoint) if entrypoint else []

    @property
    def healthcheck(self) -> list[str]:
        """The HEALTHCHECK's command, after its options."""
        healthcheck = self.last("HEALTHCHECK")
        assert healthcheck is not None, "deploy/Dockerfile has no HEALTHCHECK"
        _, cmd, command = healthcheck.partition(" CMD ")
        assert cmd, f"HEALTHCHECK without CMD: {healthcheck}"
        return exec_form(command.strip())

    @property
    def user(self) -> str:
        user = self.last("USER")
        assert user is not None, "deploy/Dockerfile has no USER: the container would run as root"
        return user


@pytest.fixture(scope="module")
def image() -> Image:
    return Image()


def test_image_is_slim_python_running_as_numeric_non_root_user(image: Image) -> None:
    for stage in image.stages:
        base = stage[0][1].split()[0]
        assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base
    uid, _, gid = image.user.partition(":")
    # Numeric (runAsNonRoot cannot check a name) and not root.
    assert uid.isdigit() and int(uid) > 0, image.user
    assert not gid or (gid.isdigit() and int(gid) > 0), image.user
    assert "8000" in image.all("EXPOSE")


def test_image_installs_the_checkout_without_test_extras(image: Image) -> None:
    installs = [run for stage in image.stages for run in image.all("RUN", stage) if "pip " in run]
    assert installs, "no pip install in deploy/Dockerfile"
    for run in installs:
        assert "--no-cache-dir" in run, run
        assert "[" not in run.split("pip", 1)[1], f"extras installed: {run}"  # no [test], no [pii-names]
    copied = [shlex.split(arguments)[:-1] for stage in image.stages for arguments in image.all("COPY", stage)]
    sources = {source for sources in copied for source in sources if not source.startswith("--")}
    assert sources <= {"pyproject.toml", "README.md", "src", "./"}, sources
    assert {"pyproject.toml", "README.md", "src"} <= sources


def test_image_command_serves_http_on_all_interfaces(image: Image) -> None:
    assert image.argv == ["onec-mcp-proxy", "http", "--host", "0.0.0.0"]
    assert image.healthcheck[:2] == ["python", "-c"], image.healthcheck
    assert "/health/live" in image.healthcheck[2]
    assert "curl" not in " ".join(image.all("HEALTHCHECK"))


def docker_ignored(path: str, patterns: list[str]) -> bool:
    """Whether `path` is left out of the build context by .dockerignore `patterns` (the last match
    wins; a pattern matches a path or any folder above it; `**/` also matches at the root)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        variants = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(candidate, variant) for candidate in candidates for variant in variants):
            ignored = not negated
    return ignored


def test_dockerignore_keeps_secrets_out_and_the_sources_in() -> None:
    # BuildKit reads <Dockerfile>.dockerignore for `docker build -f deploy/Dockerfile .`.
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    kept_out_paths = (
        ".env",
        "deploy/proxy.env",
        "src/.env",
        ".git/config",
        "tests/test_cli.py",
        ".venv/bin/python",
        "src/py_server/__pycache__/main.cpython-312.pyc",
        "src/onec_mcp_proxy.egg-info/PKG-INFO",
    )
    for kept_out in kept_out_paths:
        assert docker_ignored(kept_out, patterns), kept_out
    for needed in ("pyproject.toml", "README.md", "src/py_server/main.py", "src/py_server/knowledge_base/README.md"):
        assert not docker_ignored(needed, patterns), needed


# --- compose.yaml and the image's command, run here --------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def env_file_values(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (compose's syntax, as far as the example uses it)."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path}: not KEY=VALUE: {line}"
            values[key.strip()] = value.strip()
    return values


def compose_env(compose: dict[str, Any]) -> dict[str, str]:
    """The environment compose gives the proxy: its env_file, read from the shipped example."""
    env_files = compose["services"]["proxy"]["env_file"]
    env_files = [env_files] if isinstance(env_files, str) else env_files
    assert env_files == ["proxy.env"], env_files
    # proxy.env is the operator's copy of the example (kept out of git and of the image).
    return env_file_values(DEPLOY / "proxy.env.example")


def test_compose_runs_the_image_on_the_demo_base(image: Image, compose: dict[str, Any]) -> None:
    proxy = compose["services"]["proxy"]
    assert proxy["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert proxy["command"] == ["onec-mcp-proxy", "http", "--host", "0.0.0.0", "--demo"]
    # compose's command replaces CMD, and the image has no ENTRYPOINT to put before it.
    assert image.entrypoint + proxy["command"] == [*image.argv, "--demo"]
    assert any(str(port).endswith(":8000") for port in proxy["ports"]), proxy["ports"]
    assert proxy["healthcheck"]["test"] == ["CMD", *image.healthcheck]


def test_env_file_example_sets_a_token_and_known_settings_only(compose: dict[str, Any]) -> None:
    env = compose_env(compose)
    assert env["MCP_AUTH_TOKEN"].startswith("change-me"), "the example token must say it is to be changed"
    assert env["MCP_ALLOWED_HOSTS"] == "localhost,127.0.0.1"
    assert set(env) <= ENV_NAMES, set(env) - ENV_NAMES
    # The operator's copy holds the real token: git ignores it (the image's context leaves it out).
    assert "proxy.env" in (DEPLOY / ".gitignore").read_text(encoding="utf-8").split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return sock.getsockname()[1]


def image_environment(extra: dict[str, str]) -> dict[str, str]:
    """The container's environment, here: no developer's MCP_* settings, this venv's commands first
    on PATH (the image has `onec-mcp-proxy` and `python` on its PATH), plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith("MCP_") and key.upper() not in ENV_NAMES
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, "PYTHONIOENCODING": "utf-8", **extra}


def run_healthcheck(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30, check=False)


def test_image_command_serves_with_the_compose_environment(
    image: Image, compose: dict[str, Any], tmp_path: Path
) -> None:
    port = free_port()
    # The container's environment: compose's env_file, and MCP_PORT for the port (which the
    # HEALTHCHECK follows); `--port` on the command line as well, as an operator might add it.
    env = image_environment({**compose_env(compose), "MCP_PORT": str(port)})
    argv = [*image.entrypoint, *compose["services"]["proxy"]["command"], "--port", str(port)]
    log = tmp_path / "proxy.log"
    base = f"http://127.0.0.1:{port}"
    with background_process(argv, log, env=env, cwd=tmp_path) as process:
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # bounded readiness poll
            assert process.poll() is None, f"{argv} exited with {process.returncode}:\n{log.read_text()}"
            with contextlib.suppress(httpx2.HTTPError):
                if httpx2.get(f"{base}/health/live", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"no /health/live within {START_TIMEOUT} s:\n{log.read_text()}"
            time.sleep(0.05)

        check = run_healthcheck(image.healthcheck, env)
        assert check.returncode == 0, check.stderr

        token = env["MCP_AUTH_TOKEN"]
        with httpx2.Client(base_url=base, timeout=10) as client:
            assert client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS).status_code == 401
            wrong = {**MCP_HEADERS, "Authorization": "Bearer not-the-token"}
            assert client.post("/mcp", json=INITIALIZE, headers=wrong).status_code == 401
            right = {**MCP_HEADERS, "Authorization": f"Bearer {token}"}
            answer = client.post("/mcp", json=INITIALIZE, headers=right)
            assert answer.status_code == 200, answer.text
            # A Host that MCP_ALLOWED_HOSTS does not name is refused (DNS-rebinding protection).
            assert client.get("/health/live", headers={"Host": "evil.example"}).status_code == 421
            assert client.get("/health/ready").status_code == 200
    output = log.read_text(encoding="utf-8", errors="replace")
    assert "set MCP_ALLOWED_HOSTS" not in output, output  # the env file names the hosts
    assert token not in output


def test_healthcheck_fails_when_nothing_serves() -> None:
    env = image_environment({"MCP_PORT": str(free_port())})  # a port nobody listens on
    check = run_healthcheck(Image().healthcheck, env)
    assert check.returncode != 0
    assert "Connection refused" in check.stderr or "URLError" in check.stderr, check.stderr


def test_image_command_refuses_to_listen_beyond_loopback_without_a_token(image: Image, tmp_path: Path) -> None:
    env = image_environment({"MCP_DEMO": "true"})
    done = subprocess.run(
        [*image.argv, "--port", str(free_port())], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "MCP_AUTH_TOKEN is not set" in done.stderr


# --- Kubernetes ---------------------------------------------------------------------------------


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    files = sorted(KUBERNETES.glob("*.yaml")) + sorted(KUBERNETES.glob("*.yaml.example"))
    return [(path, doc) for path in files for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def manifest(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in manifests() if doc["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} manifests in deploy/kubernetes"
    return found[0]


KUBERNETES_VERSION = latest_version()


@pytest.mark.parametrize(
    ("path", "document"), manifests(), ids=[f"{path.name}:{doc['kind']}" for path, doc in manifests()]
)
def test_manifest_is_valid_for_a_current_kubernetes(path: Path, document: dict[str, Any]) -> None:
    # Strict: a misspelt or misplaced field is an error, not silently dropped.
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_manifests_are_the_expected_set() -> None:
    kinds = sorted(doc["kind"] for _, doc in manifests())
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service"]
    assert int(KUBERNETES_VERSION.split(".")[1]) >= 30, KUBERNETES_VERSION
    # The Secret is an example: `kubectl apply -f deploy/kubernetes/` must not create it.
    secret_files = [path.name for path, doc in manifests() if doc["kind"] == "Secret"]
    assert secret_files == ["secret.yaml.example"]


def proxy_container() -> dict[str, Any]:
    containers = manifest("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_deployment_runs_the_image_command_as_its_user(image: Image) -> None:
    deployment = manifest("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = proxy_container()
    assert deployment["spec"]["replicas"] == 2
    # command replaces ENTRYPOINT and args replaces CMD; without args the image's CMD would follow.
    argv = container.get("command", image.entrypoint) + container.get(
        "args", [] if "command" in container else image.argv[len(image.entrypoint) :]
    )
    assert argv == image.argv
    uid, _, gid = image.user.partition(":")
    for context in (pod["securityContext"], container["securityContext"]):
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == int(uid)
        assert context.get("runAsGroup", int(gid or uid)) == int(gid or uid)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert [port["containerPort"] for port in container["ports"]] == [8000]


def test_deployment_probes_use_the_health_endpoints() -> None:
    container = proxy_container()
    http_port = {port.get("name"): port["containerPort"] for port in container["ports"]}
    for probe, path in (("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert http_port.get(get["port"], get["port"]) == 8000
        # The kubelet's Host is the pod IP, which MCP_ALLOWED_HOSTS does not name: the proxy would
        # answer 421. localhost is always allowed.
        assert {"name": "Host", "value": "localhost"} in get["httpHeaders"]
    if "startupProbe" in container:
        assert container["startupProbe"]["httpGet"]["path"] == "/health/live"


def pod_environment() -> dict[str, str]:
    """The container's MCP_* environment, with the ConfigMap and the example Secret resolved."""
    container = proxy_container()
    configmap, secret = manifest("ConfigMap"), manifest("Secret")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == configmap["metadata"]["name"]
        env.update(configmap["data"])
    for variable in container["env"]:
        if "value" in variable:
            env[variable["name"]] = variable["value"]
            continue
        reference = variable["valueFrom"]["secretKeyRef"]
        assert reference["name"] == secret["metadata"]["name"]
        env[variable["name"]] = secret["stringData"][reference["key"]]
    return env


def test_deployment_takes_secrets_from_the_secret_and_runs_stateless() -> None:
    container = proxy_container()
    from_secret = {
        variable["name"]: variable["valueFrom"]["secretKeyRef"]
        for variable in container["env"]
        if "secretKeyRef" in variable.get("valueFrom", {})
    }
    assert set(from_secret) == {"MCP_AUTH_TOKEN", "MCP_ONEC_PASSWORD"}
    configmap = manifest("ConfigMap")["data"]
    assert {"MCP_ONEC_URL", "MCP_ONEC_USERNAME", "MCP_ALLOWED_HOSTS"} <= set(configmap)
    assert not {"MCP_AUTH_TOKEN", "MCP_ONEC_PASSWORD"} & set(configmap)
    assert {"name": "MCP_STATELESS_HTTP", "value": "true"} in container["env"]
    env = pod_environment()
    assert set(env) <= ENV_NAMES, set(env) - ENV_NAMES


def test_deployment_environment_is_a_valid_configuration(monkeypatch: pytest.MonkeyPatch, image: Image) -> None:
    for name, value in pod_environment().items():
        monkeypatch.setenv(name, value)
    settings = load_settings({"host": image.argv[image.argv.index("--host") + 1]}, env_file=None)
    require_safe_exposure(settings)  # 0.0.0.0 with a token: allowed
    assert settings.stateless_http is True
    assert settings.auth_token is not None
    assert settings.onec_password.get_secret_value()
    assert "onec-mcp-proxy" in settings.allowed_hosts  # the Service's name


def test_service_and_disruption_budget_select_the_pods() -> None:
    labels = manifest("Deployment")["spec"]["template"]["metadata"]["labels"]
    service, budget = manifest("Service"), manifest("PodDisruptionBudget")
    assert service["spec"]["selector"].items() <= labels.items()
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] == 1
    ports = {port.get("name"): port["containerPort"] for port in proxy_container()["ports"]}
    (service_port,) = service["spec"]["ports"]
    assert ports.get(service_port["targetPort"], service_port["targetPort"]) == 8000
