"""The Lambda artifacts as built without Docker: the layer Makefile alone (fast) and the whole
`make package` (`sam build`, slow: it may first install aws-sam-cli into .venv-sam).

The layer must hold the collector package (without its dev-only tools/) and the runtime
dependencies as CPython 3.14 aarch64 builds, and nothing from tests or dev tooling; the unzipped
function plus layer must stay under Lambda's 250 MB.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[1]
LAYER_DIR = ROOT / "layers" / "collector"
RUNTIME_PINS = LAYER_DIR / "requirements.txt"
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
# Lambda's runtime: python3.14 on arm64 (template.yaml).
EXTENSION_TAG = "cpython-314-aarch64-linux-gnu"
EM_AARCH64 = 183
COMPILED = {"pydantic_core", "orjson", "pybase64"}
# Test and dev tooling, and what the Lambda runtime already has (boto3, botocore).
FORBIDDEN = {
    "pytest",
    "_pytest",
    "moto",
    "hypothesis",
    "ruff",
    "cfnlint",
    "mypy",
    "samcli",
    "samtranslator",
    "segment",
    "rudderstack",
    "tests",
    "boto3",
    "botocore",
    "pip",
    "setuptools",
}


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=900, **kwargs
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def unzipped_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def zipped_bytes(directory: Path, archive: Path) -> int:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                zipped.write(path, path.relative_to(directory))
    return archive.stat().st_size


def pinned_distributions() -> dict[str, str]:
    pins = {}
    for line in RUNTIME_PINS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[re.sub(r"[-.]+", "_", name).lower()] = version
    return pins


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[4] == 2, f"{path} is not a 64-bit ELF file"
    return int.from_bytes(header[18:20], "little")


def check_layer(layer_root: Path) -> None:
    """What `python/` of the built layer must and must not hold."""
    python = layer_root / "python"
    assert sorted(p.name for p in layer_root.iterdir()) == ["python"]
    top_level = {p.name.removesuffix(".py") for p in python.iterdir()}

    collector = python / "collector"
    assert (collector / "__init__.py").is_file()
    shipped = {p.name for p in collector.iterdir()}
    sources = {p.name for p in (LAYER_DIR / "collector").glob("*.py")}
    assert shipped == sources, "the layer's collector/ differs from the source modules"
    assert not (collector / "tools").exists()
    assert not list(python.rglob("__pycache__")) and not list(python.rglob("*.pyc"))

    assert top_level & FORBIDDEN == set()
    assert not (python / "bin").exists()

    # Exactly the pinned runtime versions (dist-info names are normalised with underscores).
    installed = {}
    for info in python.glob("*.dist-info"):
        name, _, version = info.name.removesuffix(".dist-info").rpartition("-")
        installed[re.sub(r"[-.]+", "_", name).lower()] = version
    for name, version in pinned_distributions().items():
        assert installed.get(name) == version, f"{name}: {installed.get(name)} != {version}"

    extensions = sorted(python.rglob("*.so"))
    packages_with_extensions = {p.relative_to(python).parts[0] for p in extensions}
    assert packages_with_extensions >= COMPILED
    for extension in extensions:
        assert EXTENSION_TAG in extension.name or "abi3" in extension.name, extension.name
        assert elf_machine(extension) == EM_AARCH64, f"{extension} is not an aarch64 build"


def report(label: str, directory: Path, tmp_path: Path) -> int:
    size = unzipped_bytes(directory)
    archive = zipped_bytes(directory, tmp_path / f"{label}.zip")
    print(f"{label}: {size / 1e6:.2f} MB unzipped, {archive / 1e6:.2f} MB zipped ({size} bytes)")
    return size


def test_layer_makefile_builds_arm64_cp314_layer(tmp_path: Path) -> None:
    """Only the layer's Makefile target, as `sam build` runs it (pip fetches wheels from PyPI)."""
    artifacts = tmp_path / "CollectorLayer"
    artifacts.mkdir()
    run(
        [
            "make",
            "-f",
            str(LAYER_DIR / "Makefile"),
            "build-CollectorLayer",
            f"ARTIFACTS_DIR={artifacts}",
            f"PYTHON={sys.executable}",
        ]
    )
    check_layer(artifacts)
    assert report("layer", artifacts, tmp_path) < LAMBDA_UNZIPPED_LIMIT


@pytest.mark.slow
def test_make_package_builds_function_and_layer_without_docker(tmp_path: Path) -> None:
    build_dir = tmp_path / "build"
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent"}  # proves no container is used
    run(["make", "package", f"SAM_BUILD_DIR={build_dir}"], env=env)

    template, matches = decode(str(build_dir / "template.yaml"))
    assert template is not None, matches
    resources = template["Resources"]
    layer = build_dir / resources["CollectorLayer"]["Properties"]["ContentUri"]
    function = build_dir / resources["IngestFunction"]["Properties"]["CodeUri"]
    assert layer.resolve() == (build_dir / "CollectorLayer").resolve()

    check_layer(layer)
    # Each function is only its handler; code and dependencies come from the layer.
    assert sorted(p.name for p in function.iterdir()) == ["app.py"]
    for other in ("IdentityExportFunction", "BrowserFunction"):
        code = build_dir / resources[other]["Properties"]["CodeUri"]
        assert sorted(p.name for p in code.iterdir()) == ["app.py"], other

    total = report("layer", layer, tmp_path) + report("function", function, tmp_path)
    print(f"function + layer: {total / 1e6:.2f} MB unzipped (Lambda's limit: 250 MB)")
    assert total < LAMBDA_UNZIPPED_LIMIT
