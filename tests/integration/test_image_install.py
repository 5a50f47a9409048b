"""The production images install no dev sandbox, and still work without it.

No Docker engine here, so this does what each Dockerfile's build stage does to
the source: copy the paths its ``COPY`` lines name (and nothing else) into an
empty directory and ``pip install`` it, into a target directory rather than a
venv to stay quick. The installed tree is then imported by an interpreter that
sees only that directory and the third-party dependencies (``python -S`` skips
the ``.pth`` files, so this checkout's editable install stays invisible).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from tests.unit.test_images import IMAGES, build_stage_sources

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]

#: What each image runs: its entry point must import without the sandbox.
RUNTIME_MODULES = {
    "worker": ["steadfast_worker.worker", "steadfast_worker.workflows"],
    "operator": ["steadfast_operator.handlers"],
}


def install_like_the_dockerfile(name: str, tmp: Path) -> Path:
    """The site directory the image's ``pip install .`` would produce."""
    src = tmp / "src"
    src.mkdir()
    for source in build_stage_sources(IMAGES[name].read_text()):
        path = REPO / source
        if path.is_dir():
            shutil.copytree(path, src / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / source)
    site = tmp / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile"]
    subprocess.run(
        [*pip, "--target", str(site), str(src)],
        check=True,
        cwd=tmp,
        timeout=100,
    )
    return site


def python_in(site: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *deps])}
    env.pop("PYTHONHOME", None)
    return subprocess.run(
        [sys.executable, "-S", "-c", code],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def steadfast(site: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return python_in(site, f"from steadfast_cli.main import main; main({list(argv)!r})", cwd)


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_image_install_has_no_dev_sandbox_and_runs_without_it(name: str, tmp_path: Path) -> None:
    site = install_like_the_dockerfile(name, tmp_path)
    installed = {p.name for p in site.iterdir() if p.name.startswith("steadfast_")}
    assert "steadfast_dev" not in installed
    assert {"steadfast_contract", "steadfast_cli", f"steadfast_{name}"} <= installed

    probe = python_in(
        site,
        "import importlib.util, sys\n"
        "assert importlib.util.find_spec('steadfast_dev') is None, 'the sandbox is importable'\n"
        f"for m in {RUNTIME_MODULES[name]!r}: __import__(m)\n"
        "assert not [m for m in sys.modules if m.startswith('steadfast_dev')]\n"
        "print('ok')\n",
        tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "ok"

    help_ = steadfast(site, tmp_path, "--help")
    assert help_.returncode == 0, help_.stderr
    for verb in ("dev", "sim", "worker", "operator"):
        assert verb in help_.stdout

    for verb in ("dev", "sim"):
        refused = steadfast(site, tmp_path, verb)
        assert refused.returncode == 1, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, refused.stderr
        assert f"steadfast {verb}: the dev sandbox (steadfast_dev) is not installed" in lines[0]
        assert "Traceback" not in refused.stderr
