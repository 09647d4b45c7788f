"""The wheel: built from the repository, installed into a fresh virtual environment and run from outside the
repository, so that what a user gets from `pip install cnnlab` (templates, the web app's static files, the
`cnnlab` command, its version and extras) is what is tested, not the source tree.

Offline and quick: the wheel is built without build isolation (setuptools comes from the dev extra), and the fresh
environment borrows this one's installed dependencies through a .pth file that names this environment's
site-packages as a plain path: Python then does not run that folder's own .pth files, so the editable install of
cnnlab in it cannot leak in (checked: cnnlab is imported from the new environment).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile

import pytest

from conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh virtual environment with the wheel installed (its bin/ folder), and the wheel."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"  # a copy: building in place would leave build/ and *.egg-info in the checkout
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", root / "dist", source], check=True)
    (wheel,) = (root / "dist").glob("cnnlab-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", root / "venv"], check=True)
    python = root / "venv" / "bin" / "python"
    subprocess.run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], check=True)
    # only now the dependencies, so that pip above saw a bare environment
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "cnnlab-test-dependencies.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    return root / "venv" / "bin", wheel


def run_outside(bin_dir, cwd, *argv, timeout=180):
    """A command of the new environment, with nothing of the repository on its path and run from elsewhere."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([str(bin_dir / argv[0]), *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_wheel_has_the_version_and_the_extras(venv, tmp_path):
    bin_dir, wheel = venv
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"cnnlab-{PYPROJECT['project']['version']}.dist-info/METADATA").decode()
    extras = {line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Provides-Extra:")}
    assert {"jax", "mlflow", "export", "tune", "all"} <= extras
    (collected,) = re.findall(r'^Requires-Dist: cnnlab\[(.*)\]; extra == "all"$', metadata, re.MULTILINE)
    assert set(collected.split(",")) == extras - {"all", "dev"}  # all: every extra but the test tools

    version = run_outside(bin_dir, tmp_path, "cnnlab", "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"cnnlab {PYPROJECT['project']['version']}"


# One process (one TensorFlow start-up): where cnnlab comes from, its package data, the whole job through the CLI's
# entry point, and the web app's page and script served from the installed static folder.
INSTALLED_RUN = """
import json, pathlib
import cnnlab
from cnnlab.cli import main
from cnnlab.prediction import Classifier
from cnnlab.serve import app, create_app
from fastapi.testclient import TestClient

package = pathlib.Path(cnnlab.__file__).parent
status = main(["run", "--dataset", "digits", "--epochs", "1", "--out", "runs", "--name", "wheel"])
client = TestClient(create_app(Classifier.load("runs/wheel/best.keras")))
print(json.dumps({"package": str(package), "status": status,
                  "templates": sorted(p.name for p in (package / "templates").iterdir()),
                  "static": sorted(p.name for p in app.STATIC.iterdir()),
                  "served": [client.get(path).status_code for path in ("/", "/static/app.js", "/static/style.css")]}))
"""


@pytest.mark.slow  # a whole run with its report, in a fresh process: ~22 s of CPU
def test_installed_cnnlab_runs_the_whole_job_and_serves_its_page(venv, tmp_path):
    bin_dir, _ = venv
    done = run_outside(bin_dir, tmp_path, "python", "-c", INSTALLED_RUN)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["package"].startswith(str(bin_dir.parent)), "cnnlab was imported from outside the new environment"
    assert found["templates"] == sorted(p.name for p in (REPO / "src/cnnlab/templates").iterdir())
    assert found["static"] == sorted(p.name for p in (REPO / "src/cnnlab/serve/static").iterdir())
    assert found["status"] == 0 and found["served"] == [200, 200, 200]
    page = (tmp_path / "runs" / "wheel" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "cnnlab report: " in page and "--accent:" in page  # + _style
