"""Writing the files shipped with a job (its input directory): what the translator does with
the files of a built description (:mod:`act.atlas.translate.build`), and ``actctl translate
--out``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from act.common.atomic import atomic_write


def write_files(directory: Path, files: Mapping[str, bytes]) -> None:
    """Write the shipped files: directory 0755, files 0644 (replacing earlier versions)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    for name, data in files.items():
        target = directory / name
        if target.parent != directory:
            raise ValueError(f"{name!r} is not a plain file name")
        atomic_write(target, data, mode=0o644)
