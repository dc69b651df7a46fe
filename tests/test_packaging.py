"""Packaging: the wheel built from a checkout carries every file of the package (the shipped knowledge
base, the demo, any page the HTTP front-end serves), and a fresh venv with only that wheel and its
dependencies runs the command and finds its knowledge base.

What `pipx install .` and `uvx --from . onec-mcp-proxy` do, without needing either tool. It takes
about 30 s (a build in pip's isolated environment, then an install from the package index, both
served from pip's cache after the first run) and is skipped when the index cannot be reached.

The source archive (`python -m build --sdist`) carries the licence and metadata a package index
wants, and every file the test suite needs, so that the suite runs from the unpacked archive
(`pip install -e ".[test]" && python -m pytest` there). Building it takes a few seconds more."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
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
# What a developer's checkout gathers besides the project's files; the copy the source archive is
# built from leaves it out, except the files MANIFEST.in must keep out itself (a .env, the operator's
# deploy/proxy.env, a knowledge-base index, bytecode).
_NOT_A_PROJECT_FILE = shutil.ignore_patterns(
    ".git", "build", "dist", ".venv", "venv", "*.egg-info", ".pytest_cache", ".ruff_cache", ".mypy_cache"
)
# The folders the test suite reads besides the package: every file of theirs belongs in the archive.
SDIST_FOLDERS = ("tests", "bench", "deploy")


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


def _project_files(*folders: str) -> set[str]:
    """The files of these folders that the project has: in a git checkout, those git tracks or would
    (untracked but not ignored); elsewhere, such as in an unpacked source archive, those on disk."""
    if shutil.which("git") and (ROOT / ".git").exists():
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", *folders],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        return {name for name in listed.split("\0") if name and (ROOT / name).is_file()}
    return {
        path.relative_to(ROOT).as_posix()
        for folder in folders
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".sqlite3")
    }


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source archive of a copy of the checkout, built as `python -m build --sdist` builds it."""
    checkout = tmp_path_factory.mktemp("sdist-checkout") / "onec-mcp-proxy"
    shutil.copytree(ROOT, checkout, ignore=_NOT_A_PROJECT_FILE)
    dist = tmp_path_factory.mktemp("sdist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(dist), str(checkout)],
        cwd=dist,  # not the checkout, where a stale build/ folder would be imported as `build`
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0 and "No module named build" in output:
        pytest.skip('building the source archive needs `build`, one of the test dependencies: pip install -e ".[test]"')
    _succeeded_or_skip(result, "building the source archive")
    deprecated = [line.strip() for line in output.splitlines() if "Deprecat" in line or "deprecated" in line]
    assert not deprecated, f"the build warns of a deprecation: {deprecated}"
    (built,) = dist.glob("onec_mcp_proxy-*.tar.gz")
    return built


def _archive_files(sdist: Path) -> set[str]:
    """The archive's files by their path in the project (without the top folder, name-version/)."""
    with tarfile.open(sdist) as archive:
        return {
            member.name.split("/", 1)[1] for member in archive.getmembers() if member.isfile() and "/" in member.name
        }


def test_the_source_archive_carries_what_the_test_suite_needs(sdist: Path) -> None:
    inside = _archive_files(sdist)
    needed = {
        "LICENSE",
        "README.md",
        "ARCHITECTURE.md",
        "pyproject.toml",
        "env.example",
        "tests/__init__.py",
        "tests/conftest.py",
        "tests/pii_corpus/__init__.py",
        "tests/pii_corpus/labels.json",
        "deploy/.gitignore",
        "deploy/Dockerfile",
        "deploy/proxy.env.example",
        "src/py_server/main.py",
    }
    assert needed <= inside, f"missing from the source archive: {sorted(needed - inside)}"
    missing = _project_files(*SDIST_FOLDERS) - inside
    assert not missing, f"add a pattern for these to MANIFEST.in: {sorted(missing)}"
    assert {f"src/{name}" for name in _package_files()} <= inside
    # Nothing a checkout gathers: bytecode, a settings file with secrets, an index, a cache.
    stray = [
        name
        for name in inside
        if name.endswith((".pyc", ".sqlite3"))
        or Path(name).name in (".env", "proxy.env")
        or "__pycache__" in name
        or "cache/" in name
    ]
    assert not stray, stray


def test_the_source_archive_metadata_is_what_a_package_index_wants(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        (pkg_info,) = (
            member
            for member in archive.getmembers()
            if member.name.count("/") == 1 and member.name.endswith("/PKG-INFO")
        )
        extracted = archive.extractfile(pkg_info)
        assert extracted is not None
        metadata = extracted.read().decode("utf-8")
    headers = metadata.split("\n\n", 1)[0].splitlines()
    # PEP 639: an SPDX expression and the licence file, not a free-text licence or a licence classifier.
    assert "License-Expression: MIT" in headers
    assert "License-File: LICENSE" in headers
    assert not [line for line in headers if line.startswith(("License:", "Classifier: License ::"))]
    # The README is the project's page on the index, rendered as Markdown.
    assert "Description-Content-Type: text/markdown" in headers
    assert metadata.split("\n\n", 1)[1].startswith("# onec-mcp-proxy")
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
