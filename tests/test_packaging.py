"""Packaging: the wheel built from a checkout carries every file of the package (the shipped knowledge
base, the demo, any page the HTTP front-end serves), and a fresh venv with only that wheel and its
dependencies runs the command and finds its knowledge base.

What `pipx install .` and `uvx --from . onec-mcp-proxy` do, without needing either tool. It takes
about 30 s (a build in pip's isolated environment, then an install from the package index, both
served from pip's cache after the first run) and is skipped when the index cannot be reached."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "py_server"
KNOWLEDGE_BASE = PACKAGE / "knowledge_base"
# What pip says when it cannot reach the index: the test is skipped then, not failed.
OFFLINE_SIGNS = (
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "No matching distribution found",
    "Could not find a version that satisfies",
    "ConnectTimeout",
    "ReadTimeout",
)
_SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def _pip(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False
    )


def _succeeded_or_skip(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode == 0:
        return
    output = result.stdout + result.stderr
    offline = [line.strip() for line in output.splitlines() if any(sign in line for sign in OFFLINE_SIGNS)]
    if offline:
        pytest.skip(f"{what} needs the package index, which cannot be reached: {offline[0]}")
    pytest.fail(f"{what} failed:\n{output}")


def _package_files() -> set[str]:
    """Every file of the package in the checkout, as the wheel names it (py_server/...)."""
    return {
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def _project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of a copy of the checkout, so a stale build/ or egg-info in the checkout plays no part."""
    checkout = tmp_path_factory.mktemp("checkout")
    shutil.copytree(ROOT / "src", checkout / "src", ignore=_SKIPPED)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, checkout / name)
    dist = tmp_path_factory.mktemp("dist")
    _succeeded_or_skip(_pip("wheel", "--no-deps", "--quiet", "-w", dist, checkout), "building the wheel")
    (built,) = dist.glob("onec_mcp_proxy-*.whl")
    return built


def test_the_wheel_carries_every_file_of_the_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        inside = set(archive.namelist())
    missing = _package_files() - inside
    assert not missing, f"add these to [tool.setuptools.package-data] in pyproject.toml: {sorted(missing)}"
    shipped = {name for name in inside if name.startswith("py_server/knowledge_base/")}
    assert len(shipped) >= 6 and all(name.endswith((".md", ".txt")) for name in shipped)
    assert "py_server/demo/onec_data.py" in inside
    ops_pages = sorted((PACKAGE / "ops_page").glob("*.html")) if (PACKAGE / "ops_page").is_dir() else []
    assert all(f"py_server/ops_page/{page.name}" in inside for page in ops_pages)


def test_a_fresh_venv_with_the_wheel_runs_the_command_with_its_knowledge_base(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    scripts = venv / ("Scripts" if os.name == "nt" else "bin")
    python = scripts / "python"
    # This venv's pip installs into the new one: no pip bootstrap there, and pip's cache is shared.
    _succeeded_or_skip(_pip("--python", python, "install", "--quiet", wheel), "installing the wheel's dependencies")
    # Away from the checkout and with no PYTHONPATH, so only the installed copy can be imported.
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"} | {"PYTHONIOENCODING": "utf-8"}

    def run(*args: str | Path) -> str:
        result = subprocess.run(
            list(map(str, args)), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert run(scripts / "onec-mcp-proxy", "--version").strip() == f"onec-mcp-proxy {_project_version()}"
    found = run(
        python,
        "-c",
        "from py_server.extras.compliance.local_kb import SHIPPED_DIR; "
        "print(SHIPPED_DIR); print(*sorted(p.name for p in SHIPPED_DIR.iterdir()), sep='\\n')",
    ).splitlines()
    assert Path(found[0]).is_relative_to(venv)
    assert found[1:] == sorted(path.name for path in KNOWLEDGE_BASE.iterdir() if path.is_file())
    # The demo and the offline knowledge base, indexed from the installed files.
    report = run(scripts / "onec-mcp-proxy", "check", "--demo")
    assert "tools: 9" in report and f"{len(found) - 1} documents" in report
