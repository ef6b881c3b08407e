"""The sdist and wheel as a packager sees them: license, metadata, and an sdist complete enough
that its own tests run and the README's links resolve.

Both are built with the setuptools backend directly (no network, no build isolation) from a copy of
the tree, so the checkout is left untouched.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

from gpudiag import __version__

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a checkout or an unpacked sdist may hold that is not source: build outputs and caches.
_NOT_SOURCE = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".whl",
               ".import_linter_cache"}
_NOT_SOURCE_FILES = {"PKG-INFO", "setup.cfg", ".gitignore"}


def _ignored(name: str) -> bool:
    return name in _NOT_SOURCE or name.endswith(".egg-info") or name.startswith("gpudiag-report-") \
        or name.endswith((".pyc", ".pyo"))


def _source_files() -> set:
    """The files the sdist must carry: git's tracked files in a checkout, else every source file here."""
    if os.path.isdir(os.path.join(ROOT, ".git")) and shutil.which("git"):
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        files = {f for f in out.decode().split("\0") if f and os.path.isfile(os.path.join(ROOT, f))}
    else:
        files = set()
        for folder, dirs, names in os.walk(ROOT):
            dirs[:] = [d for d in dirs if not _ignored(d)]
            rel = os.path.relpath(folder, ROOT)
            files |= {os.path.normpath(os.path.join(rel, n)).replace(os.sep, "/") for n in names if not _ignored(n)}
    return {f for f in files if os.path.basename(f) not in _NOT_SOURCE_FILES}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(sdist path, wheel path) built from a copy of the source tree."""
    pytest.importorskip("setuptools", minversion="77.0.3")  # the floor in pyproject's build-system
    tmp = tmp_path_factory.mktemp("pkg")
    src, out = tmp / "src", tmp / "out"
    shutil.copytree(ROOT, src, ignore=lambda d, names: [n for n in names if _ignored(n)])
    # The backend logs to stdout too: the two file names come back on one marked line.
    # (the backend rewrites sys.argv, so the folder is read first).
    code = ("import sys; from setuptools import build_meta as b; out = sys.argv[1]; s = b.build_sdist(out); "
            "w = b.build_wheel(out); print('BUILT', s, w)")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=src, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sdist, wheel = [line for line in proc.stdout.splitlines() if line.startswith("BUILT ")][-1].split()[1:]
    return out / sdist, out / wheel


def _sdist_names(sdist) -> set:
    prefix = f"gpudiag-{__version__}/"
    with tarfile.open(sdist) as tf:
        return {m.name[len(prefix):] for m in tf.getmembers() if m.isfile()}


def _metadata(text: str) -> email.message.Message:
    return email.message_from_string(text)


def test_sdist_carries_every_source_file(built):
    names = _sdist_names(built[0])
    missing = sorted(_source_files() - names)
    assert not missing, f"not in the sdist (add them to MANIFEST.in): {missing[:20]}"
    for needed in ("LICENSE", "tests/conftest.py", "tests/fakes.py", "tests/fake_torch.py", "docs/api.md",
                   "examples/my_loop.py", ".ci/run", "tests/recorded/cpu_only_container.json"):
        assert needed in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_readme_links_resolve_inside_the_sdist(built):
    names = _sdist_names(built[0])
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        links = re.findall(r"\]\(([^)#\s]+)\)", fh.read())
    local = [link for link in links if "://" not in link]
    assert local
    for link in local:
        assert link in names or any(n.startswith(link.rstrip("/") + "/") for n in names), link


@pytest.mark.parametrize("kind", ["sdist", "wheel"])
def test_metadata_carries_license_classifiers_and_authors(built, kind):
    if kind == "sdist":
        with tarfile.open(built[0]) as tf:
            text = tf.extractfile(f"gpudiag-{__version__}/PKG-INFO").read().decode()
    else:
        with zipfile.ZipFile(built[1]) as zf:
            text = zf.read(f"gpudiag-{__version__}.dist-info/METADATA").decode()
    meta = _metadata(text)
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["Author"] == "the gpudiag authors"
    classifiers = set(meta.get_all("Classifier"))
    for c in ("Operating System :: Microsoft :: Windows", "Operating System :: POSIX :: Linux",
              "Operating System :: MacOS", "Programming Language :: Python :: 3.9",
              "Programming Language :: Python :: 3.13", "Topic :: System :: Hardware",
              "Topic :: System :: Monitoring", "Environment :: GPU :: NVIDIA CUDA"):
        assert c in classifiers
    # PEP 639: a license expression excludes license classifiers; no public home yet, so no URLs.
    assert not [c for c in classifiers if c.startswith("License ::")]
    assert not meta.get_all("Project-URL") and not meta.get("Home-page")
    try:
        import trove_classifiers
    except ImportError:
        return
    assert classifiers <= set(trove_classifiers.classifiers)


def test_wheel_ships_the_license_templates_and_schema_but_not_the_tests(built):
    with zipfile.ZipFile(built[1]) as zf:
        names = set(zf.namelist())
    assert f"gpudiag-{__version__}.dist-info/licenses/LICENSE" in names
    assert "gpudiag/views/templates/report.html.j2" in names
    assert "gpudiag/report/schema/report.schema.json" in names
    assert not [n for n in names if n.startswith("tests/")]


def test_license_file_is_mit_by_the_gpudiag_authors():
    with open(os.path.join(ROOT, "LICENSE"), encoding="utf-8") as fh:
        text = fh.read()
    assert text.startswith("MIT License") and "the gpudiag authors" in text
