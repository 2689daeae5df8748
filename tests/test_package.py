"""What users install is the product: the wheel and the sdist built from this tree hold every file of the package,
and the tests themselves run the installed copy (the README's test line installs the wheel, not an editable tree).

The package's files in the tree are everything under smsbot/ and web/ (web/ is installed as smsbot.web) that git
tracks or would track; a file the build leaves out (a new sub-package missing from pyproject.toml's `packages`, a
template in a new folder) fails here, and so does a file in the wheel that the tree no longer has.
"""

from __future__ import annotations

import email
import importlib.metadata
import pathlib
import subprocess
import sys
import tarfile
import zipfile

import pytest

import smsbot

pytestmark = pytest.mark.slow  # every test asks git for the tree's files

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Where each folder of the tree lands in the installed package.
PACKAGE_DIRS = {"smsbot": "smsbot", "web": "smsbot/web"}
# What the sdist leaves out of the tree: CI's own script, and the README's pictures (a megabyte of PNGs).
NOT_IN_SDIST = (".ci/", ".gitignore", "docs/")


def tree_files(*folders: str) -> set[str]:
    """Files of the tree under `folders` (all of it if none), as git sees them: tracked, or new and not ignored."""
    if (ROOT / ".git").exists():
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", *folders],
                                cwd=ROOT, capture_output=True, check=True).stdout.decode()
        return {name for name in listed.split("\0") if name and (ROOT / name).is_file()}
    paths = [p for folder in folders or (".",) for p in (ROOT / folder).rglob("*") if p.is_file()]
    return {p.relative_to(ROOT).as_posix() for p in paths if "__pycache__" not in p.parts}


def installed_names(tree: set[str]) -> dict[str, str]:
    """The tree's package files by the name each has in the installed package."""
    names = {}
    for path in tree:
        folder, _, rest = path.partition("/")
        names[f"{PACKAGE_DIRS[folder]}/{rest}"] = path
    return names


def package_files() -> dict[str, str]:
    return installed_names(tree_files(*PACKAGE_DIRS))


def differences(expected: set[str], found: set[str]) -> list[str]:
    """What a package holds that it shouldn't, and what it lacks, in words."""
    return ([f"missing: {name}" for name in sorted(expected - found)]
            + [f"not in the tree: {name}" for name in sorted(found - expected)])


def test_the_comparison_names_a_left_out_file() -> None:
    expected = set(package_files())
    assert "smsbot/store/sqlite.py" in expected and "smsbot/web/templates/login.html" in expected
    assert differences(expected, expected - {"smsbot/store/sqlite.py"}) == ["missing: smsbot/store/sqlite.py"]
    assert differences(expected, expected | {"smsbot/old.py"}) == ["not in the tree: smsbot/old.py"]


def test_the_tests_run_the_installed_package() -> None:
    """smsbot comes from site-packages, and what is installed is this tree, file for file and byte for byte."""
    location = pathlib.Path(smsbot.__file__).resolve().parent
    assert location != ROOT / "smsbot" and "site-packages" in location.parts, location
    distribution = importlib.metadata.distribution("smsbot")
    installed = {p.as_posix(): p for p in distribution.files or []
                 if p.parts[0] == "smsbot" and "__pycache__" not in p.parts}
    expected = package_files()
    assert not differences(set(expected), set(installed)), differences(set(expected), set(installed))
    stale = [name for name, path in installed.items()
             if pathlib.Path(str(distribution.locate_file(path))).read_bytes() != (ROOT / expected[name]).read_bytes()]
    assert not stale, f"the installed copy is not this tree (reinstall with pip install '.[test]'): {stale}"


def test_the_wheel_and_the_sdist_hold_every_file(tmp_path: pathlib.Path) -> None:
    """`python -m build` makes the sdist from the tree, then the wheel from the sdist, as a packager would."""
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    version = smsbot.__version__
    wheel = tmp_path / f"smsbot-{version}-py3-none-any.whl"
    sdist = tmp_path / f"smsbot-{version}.tar.gz"

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = email.message_from_bytes(archive.read(f"smsbot-{version}.dist-info/METADATA"))
        entry_points = archive.read(f"smsbot-{version}.dist-info/entry_points.txt").decode()
    in_wheel = {name for name in names if not name.startswith(f"smsbot-{version}.dist-info/")}
    expected = set(package_files())
    assert not differences(expected, in_wheel), differences(expected, in_wheel)
    assert metadata["Version"] == version
    assert "smsbot = smsbot.web.cli:main" in entry_points

    with tarfile.open(sdist) as archive:
        in_sdist = {m.name.split("/", 1)[1] for m in archive.getmembers() if m.isfile()}
    generated = {"PKG-INFO", "setup.cfg"} | {name for name in in_sdist if name.startswith("smsbot.egg-info/")}
    tree = {name for name in tree_files() if not name.startswith(NOT_IN_SDIST)}
    assert not differences(tree, in_sdist - generated), differences(tree, in_sdist - generated)
    print(f"\nwheel: {len(in_wheel)} package files of {len(expected)} in the tree; "
          f"sdist: {len(in_sdist - generated)} files of {len(tree)}")
