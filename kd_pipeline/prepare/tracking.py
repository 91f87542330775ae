"""Is the dataset a run reads versioned by DVC? A source outside DVC makes results unreproducible.

`prepare` depends on `data/raw/` (dvc.yaml), so a folder added there with `dvc add` or
`dvc import-url` is part of the lock: change one image and `dvc status` reports `prepare`.
A `data.root` anywhere else is read but not versioned; this says so in one line.
"""

from __future__ import annotations

from pathlib import Path

from kd_pipeline.core import paths
from kd_pipeline.core.params import DataParams

# Where each source reads when data.root is not set (the libraries' own caches).
DEFAULT_ROOTS = {"medmnist": "~/.medmnist", "cifar10": "~/.cache/cifar", "cifar100": "~/.cache/cifar"}


def tracked_by(root: Path, project: Path = Path(".")) -> Path | None:
    """The `.dvc` file that versions `root` (or a folder above it inside the project), if any."""
    project = project.resolve()
    path = root.expanduser().resolve()
    while path != project and project in path.parents:
        pointer = path.with_name(path.name + ".dvc")
        if pointer.is_file():
            return pointer
        path = path.parent
    return None


def untracked_note(cfg: DataParams, project: Path = Path(".")) -> str | None:
    """One line when the configured source is not versioned by DVC under data/raw/, else None."""
    if cfg.name == "digits":
        return None  # ships with scikit-learn, pinned in requirements.lock
    root = Path(cfg.root or DEFAULT_ROOTS.get(cfg.name, ".")).expanduser()
    raw = (project / paths.RAW).resolve()
    inside = raw == root.resolve() or raw in root.resolve().parents
    if inside and tracked_by(root, project) is not None:
        return None
    name = root.name or cfg.name
    return (
        f"data.root {root} is not versioned by DVC, so prepare does not depend on its files and"
        f" --queue/--temp experiments may not see them: copy it to {paths.RAW}/{name} and run"
        f" `dvc add {paths.RAW}/{name}` (or `dvc import-url <path-or-url> {paths.RAW}/{name}`),"
        f" then set data.root: {paths.RAW}/{name}"
    )
