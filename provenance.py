"""What produced an artefact: package versions recorded next to results and policies."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version


def package_versions(packages: tuple[str, ...]) -> dict:
    """{"python": ..., package: version} for the installed ones among `packages`."""
    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
