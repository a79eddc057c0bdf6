"""pyproject ships every package and config file of the tree (a wheel lists packages one by one)."""

from __future__ import annotations

import sys
from fnmatch import fnmatchcase
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def installed_name(folder: Path) -> str:
    """The package a source folder installs as, through pyproject's package-dir."""
    relative = folder.relative_to(ROOT).as_posix()
    for package, source in SETUPTOOLS["package-dir"].items():
        if relative == source or relative.startswith(source + "/"):
            return package + relative[len(source) :].replace("/", ".")
    return relative.replace("/", ".")


def test_every_package_of_the_tree_is_listed():
    sources = [ROOT / "wmrobot", *(ROOT / s for s in SETUPTOOLS["package-dir"].values())]
    found = {installed_name(init.parent) for src in sources for init in src.rglob("__init__.py")}
    assert "wmrobot.planners.numba" in found  # the walk reaches nested packages
    assert not ships("hydra/job_logging/wmrobot.yaml", "*/*.yaml")
    assert sorted(found - set(SETUPTOOLS["packages"])) == []
    assert sorted(set(SETUPTOOLS["packages"]) - found) == []


def ships(path: str, pattern: str) -> bool:
    """Whether a package-data glob takes ``path``: ``*`` stays within one folder, as setuptools'."""
    parts, globs = path.split("/"), pattern.split("/")
    return len(parts) == len(globs) and all(map(fnmatchcase, parts, globs))


def test_every_config_file_is_package_data():
    patterns = SETUPTOOLS["package-data"]["wmrobot.configs"]
    configs = ROOT / SETUPTOOLS["package-dir"]["wmrobot.configs"]
    files = [p.relative_to(configs).as_posix() for p in configs.rglob("*.yaml")]
    assert any("/" in f for f in files) and any(f.count("/") == 2 for f in files)
    unshipped = [f for f in files if not any(ships(f, p) for p in patterns)]
    assert unshipped == []
