"""tools/daqload installs with pip from the checkout, offline, with its native extension."""

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.skipif(importlib.util.find_spec("pip") is None or importlib.util.find_spec("setuptools") is None,
                    reason="pip/setuptools not installed for this Python (Debian: python3-pip python3-setuptools)")
def test_pip_installs_the_package_offline(tmp_path):
    # A copy: pip builds in the source tree, and the checkout should stay clean. The
    # native extension compiles daqd's codec header from ../../codec/include.
    src = tmp_path / "repo" / "tools" / "daqload"
    shutil.copytree(REPO / "tools" / "daqload", src,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "*.so"))
    shutil.copytree(REPO / "codec" / "include", tmp_path / "repo" / "codec" / "include")
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index",
                        "--disable-pip-version-check", "--target", str(target), str(src)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (target / "daqload" / "dataset.py").exists()
    env = dict(os.environ, PYTHONPATH=str(target))
    r = subprocess.run([sys.executable, "-c", "import daqload, sys; print(daqload.__file__, daqload.__version__); "
                        "from daqload import RunDataset, ChunkShuffleSampler, RunStream, open_run; "
                        "from daqload import _native; print(_native.__file__, _native.FILTER_ID)"],
                       capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=60)
    assert r.returncode == 0, r.stderr
    assert str(target / "daqload" / "__init__.py") in r.stdout
    assert str(target / "daqload" / "_native.") in r.stdout and " 32008" in r.stdout  # the extension was built
    assert not list(src.glob("daqload/*.so"))  # installed, not left in the source tree
