"""Where configs come from: the packaged config tree and the user's own config dirs.

:data:`CONF_DIR` is the packaged tree: the top-level ``conf/`` of a source checkout (editable install,
``PYTHONPATH``) or ``stablenets/conf`` of an installed wheel — the same files, which
``[tool.setuptools.package-dir]`` maps into the package at build time.

User config dirs extend it without editing the package, in either of two ways:

* ``hydra.searchpath=[file:///abs/my_conf]`` — Hydra's own option, on the command line or in
  :func:`stablenets.api.compose`'s overrides (a relative ``file://my_conf`` is taken from the cwd);
* ``STABLENETS_CONFIG_PATH=/abs/my_conf:/other`` — dirs (relative ones from the cwd) or ``pkg://module``
  entries, separated by ``os.pathsep``, added by :class:`EnvSearchPath` whenever the packaged tree is the
  primary config dir.

Both come after the packaged tree: a user file adds options (``model/mine.yaml``, ``experiment/mine.yaml``);
one that has the name of a packaged file is shadowed by it.  A run records its search path in
``.hydra/hydra.yaml`` (``hydra.runtime.config_sources``); :func:`recorded_search_path` reads it back, so
``stablenets-eval`` re-composes a run trained with a user config dir without being told about it.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from .overrides import hydra_quoted
from .run_dir import HYDRA

ENV_VAR = "STABLENETS_CONFIG_PATH"
PROVIDER = ENV_VAR  # how these entries are named in ``--info searchpath`` and in a run's config_sources
# providers of the search path that every composition has anyway (Hydra's own, the primary dir, schemas)
BUILTIN_PROVIDERS = ("hydra", "main", "schema")


def package_conf_dir() -> str:
    """The packaged config tree: ``stablenets/conf`` when installed from a wheel, else the checkout's ``conf/``."""
    package = Path(__file__).resolve().parent.parent
    for cand in (package / "conf", package.parent / "conf"):
        if (cand / "train.yaml").is_file():
            return str(cand)
    raise RuntimeError(
        f"stablenets: no config tree next to {package} (looked for conf/train.yaml in the package "
        "and in its source checkout); reinstall the package"
    )


CONF_DIR = package_conf_dir()


def _entry(item: str, base: Path | None = None) -> str:
    """A search-path entry with its scheme: bare and ``file://`` paths made absolute (from ``base`` or the cwd)."""
    if "://" in item and not item.startswith("file://"):
        return item
    path = Path(item.removeprefix("file://")).expanduser()
    return "file://" + str(path if path.is_absolute() else (base or Path.cwd()) / path)


def env_search_path() -> list[str]:
    """The entries of ``STABLENETS_CONFIG_PATH``, each with its scheme, relative dirs made absolute."""
    return [_entry(item) for item in os.environ.get(ENV_VAR, "").split(os.pathsep) if item.strip()]


def _is_package_tree(path: str) -> bool:
    try:
        return Path(path.removeprefix("file://")).resolve() == Path(CONF_DIR).resolve()
    except OSError:
        return False


class EnvSearchPath(SearchPathPlugin):
    """Appends the dirs of ``STABLENETS_CONFIG_PATH`` when the primary config dir is the packaged tree."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        elements = search_path.get_path()
        if not any(el.provider == "main" and _is_package_tree(el.path) for el in elements):
            return  # another Hydra application in the same process: not ours to extend
        present = {el.path for el in elements}
        for entry in env_search_path():
            if entry not in present and entry.removeprefix("file://") not in present:
                search_path.append(provider=PROVIDER, path=entry)


def register_plugin() -> None:
    """Make :class:`EnvSearchPath` and the SLURM launcher known to Hydra in this process (idempotent).  The
    launcher is registered by hand too: Hydra's scan of ``hydra_plugins`` misses it in an editable install."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.stablenets_launcher.slurm_launcher import SlurmLauncher

    Plugins.instance().register(EnvSearchPath)
    Plugins.instance().register(SlurmLauncher)


def recorded_search_path(run_dir: str | Path) -> list[str]:
    """The user config dirs a run was composed with, from its ``.hydra/hydra.yaml``, as absolute entries.

    Relative ``file://`` entries are taken from the run's own cwd (``hydra.runtime.cwd``).
    """
    path = Path(run_dir) / HYDRA / "hydra.yaml"
    if not path.is_file():
        return []
    from .files import read_yaml

    runtime = ((read_yaml(path, dict) or {}).get("hydra") or {}).get("runtime") or {}
    cwd = Path(runtime["cwd"]) if runtime.get("cwd") else None
    entries = []
    for src in runtime.get("config_sources") or []:
        if src.get("provider") in BUILTIN_PROVIDERS or not src.get("path"):
            continue
        scheme = src.get("schema") or "file"
        entry = _entry(src["path"], cwd) if scheme == "file" else f"{scheme}://{src['path']}"
        if entry not in entries:
            entries.append(entry)
    return entries


def searchpath_override(entries: list[str]) -> str:
    """``hydra.searchpath=[...]`` for these entries, each quoted."""
    return f"hydra.searchpath=[{','.join(map(hydra_quoted, entries))}]"


register_plugin()


def compose_config(
    overrides: list[str] | tuple[str, ...] = (), return_hydra_config: bool = False, job_name: str = "train"
):
    """``train.yaml`` of the packaged tree composed with ``overrides`` (user dirs included), as the CLI would.

    Works whatever Hydra state the process is in (inside a Hydra app, after another composition): the global
    Hydra instance is set aside for the composition and restored afterwards.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    register_plugin()
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, job_name=job_name, version_base="1.3"):
            return compose("train", overrides=list(overrides), return_hydra_config=return_hydra_config)
    finally:
        restore_gh_from_backup(backup)
