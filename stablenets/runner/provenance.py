"""What produced a run: the package version and, for a source checkout, its git commit.

``results.json`` carries these fields (``stablenets-collect`` adds them as columns):

* ``version`` — ``stablenets.__version__``;
* ``git_commit`` — ``git rev-parse HEAD`` of the source checkout the package is imported from, ``null`` when
  it is installed from a wheel (or git is missing);
* ``git_dirty`` — whether the package's own files (``stablenets/``, ``conf/``, ``pyproject.toml``) differ
  from that commit, untracked files under them included; ``null`` without a commit.

Only the checkout that holds the imported package counts (its root has ``.git`` and ``conf/train.yaml``):
a wheel installed into a virtual environment inside some other repository reports no commit.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .. import __version__

FIELDS = ("version", "git_commit", "git_dirty")
TRACKED = ("stablenets", "conf", "pyproject.toml")


def source_checkout() -> Path | None:
    """The git checkout the package is imported from, if any."""
    root = Path(__file__).resolve().parent.parent.parent
    return root if (root / ".git").exists() and (root / "conf" / "train.yaml").is_file() else None


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def provenance() -> dict[str, str | bool | None]:
    """``{"version", "git_commit", "git_dirty"}`` of the code running now."""
    commit = dirty = None
    root = source_checkout()
    if root is not None:
        head = _git(root, "rev-parse", "HEAD")
        if head:
            commit = head.strip()
            status = _git(root, "status", "--porcelain", "--", *TRACKED)
            dirty = None if status is None else bool(status.strip())
    return {"version": __version__, "git_commit": commit, "git_dirty": dirty}
