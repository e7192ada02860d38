"""The wheel carries the core, the built-in plugins, the templates and the entry points."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("kwscompress-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_has_every_python_file_of_core_and_plugins(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    sources = [
        (p, "kwscompress/" + str(p.relative_to(ROOT / "kwscompress")))
        for p in (ROOT / "kwscompress").rglob("*.py")
    ]
    sources += [(p, str(p.relative_to(ROOT / "plugins"))) for p in (ROOT / "plugins").rglob("*.py")]
    missing = [target for _, target in sources if target not in names]
    assert not missing, f"not in the wheel (add the package to pyproject): {missing}"


def test_wheel_has_templates_clips_and_entry_points(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    templates = sorted(p.name for p in (ROOT / "firmware_templates").glob("*.j2"))
    assert templates
    for name in templates:
        assert f"kwscompress/firmware_templates/{name}" in names
    for clip in ("yes", "no", "noise", "silence"):
        assert f"kwscompress/data/reference_clips/{clip}_1000ms.wav" in names
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    text = wheel.read(entry_points).decode()
    for line in (
        "[kwscompress]",
        "features = kwscompress_features",
        "models = kwscompress.models",
        "datasets = kwscompress.data.sources",
        "kwscompress = kwscompress.cli:main",
    ):
        assert line in text
