"""convdoctor installs beside the user's torch: ranges in pyproject, exact pins only in constraints.txt.

The slow test builds a virtual environment whose only package is torch 2.13.0 (the CPU wheel in
this machine's local wheel folder, installed with ``--no-deps``: the point is which torch pip
finds, not a working torch) and asks pip for the plan (``--dry-run --report``) of installing
the package there. pip reads only the local package folders (``--no-index``), so the test runs
offline; torchao is not among them, so the plain package is planned (extras add no torch pin).
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
#: The other torch: a CPU wheel kept on this machine.
OTHER_TORCH = "2.13.0"
WHEELS = Path("/opt/wheels")
#: Local package folders pip may read (flat folders of wheels); nothing is fetched from the network.
LOCAL_FILES = [WHEELS, Path("/opt/pypi/files"), Path("/opt/pypi-more/files")]


def _requirements() -> list[Requirement]:
    return [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]


def test_install_requirements_are_ranges_not_pins() -> None:
    for req in _requirements():
        assert not any(spec.operator in ("==", "===") for spec in req.specifier), f"{req} pins an exact version"


def test_torch_range_admits_the_oldest_supported_and_stops_before_3() -> None:
    torch_req = next(r for r in _requirements() if r.name == "torch")
    assert torch_req.specifier.contains(OTHER_TORCH)
    assert torch_req.specifier.contains("2.14.1")
    assert not torch_req.specifier.contains("3.0.0")
    names = {r.name for r in _requirements()}
    # torchvision would make pip swap in the torch its newest wheel was built for
    assert "torchvision" not in names


def test_constraints_pin_what_make_and_ci_install() -> None:
    pins = {
        Requirement(line).name: line
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert pins["torch"] == "torch==2.14.1" and pins["torchvision"] == "torchvision==0.29.1"
    assert pins["torchao"] == "torchao==0.18.0"
    makefile = (ROOT / "Makefile").read_text()
    assert "-c $(CONSTRAINTS)" in makefile and "CONSTRAINTS ?= constraints.txt" in makefile


@pytest.fixture(scope="session")
def venv_with_other_torch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wheel = next(WHEELS.glob(f"torch-{OTHER_TORCH}*.whl"), None) if WHEELS.is_dir() else None
    if wheel is None:
        pytest.skip(f"no torch {OTHER_TORCH} wheel in {WHEELS} on this machine")
    env = tmp_path_factory.mktemp("venv-torch-2.13")
    venv.create(env, with_pip=False)  # this interpreter's pip drives it (--python): no ensurepip run
    subprocess.run([*_pip(env), "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    return env


def _pip(env: Path) -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", str(env / "bin" / "python")]


@pytest.mark.slow
def test_installing_beside_torch_2_13_keeps_it(venv_with_other_torch: Path, tmp_path: Path) -> None:
    pip = _pip(venv_with_other_torch)
    listed = subprocess.run([*pip, "list", "--format=json"], check=True, capture_output=True, text=True).stdout
    assert {"name": "torch", "version": f"{OTHER_TORCH}+cpu"} in json.loads(listed)
    report = tmp_path / "plan.json"
    links = [arg for folder in LOCAL_FILES if folder.is_dir() for arg in ("--find-links", str(folder))]
    run = subprocess.run(
        [*pip, "install", "--dry-run", "--no-index", *links, "--report", str(report), "-q", str(ROOT)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PIP_CONFIG_FILE": "/dev/null"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    plan = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert "convdoctor" in plan
    assert "torch" not in plan, f"pip plans to replace torch {OTHER_TORCH} with {plan.get('torch')}"
    assert not any(name.startswith("nvidia-") for name in plan), sorted(plan)
