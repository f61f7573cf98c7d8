"""Files of a checkpoint directory: safe paths inside it, JSON reading, and the error both raise.

No torch: the tokenizer layer and the CLI use these without loading the model code. Every file a
loader opens goes through `inside`, so a name in an index (or a symlink) can never make dgemma read
a file outside the checkpoint directory.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

MAX_JSON_BYTES = 64 * 1024 * 1024  # config, generation config, index, tokenizer config


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded; the message says what is wrong and where."""


def inside(directory: Path, name: str, listed_in: Path | None = None) -> Path:
    """`directory / name`, refused (CheckpointError) if `name` is absolute, climbs with `..`, or
    resolves (through symlinks) to a place outside `directory`. The file need not exist."""
    where = f"{listed_in} lists {name!r}" if listed_in else f"{name!r}"
    if (
        not isinstance(name, str)
        or not name
        or "\0" in name
        or PurePosixPath(name).is_absolute()
        or PureWindowsPath(name).is_absolute()
        or PureWindowsPath(name).drive
        or ".." in PurePosixPath(name.replace("\\", "/")).parts
    ):
        raise CheckpointError(f"{where}: checkpoint files must be plain names inside {directory}")
    path = directory / name
    root = directory.resolve()
    target = path.resolve()
    if target != root and root not in target.parents:
        raise CheckpointError(f"{where}: {path} resolves to {target}, outside the checkpoint directory")
    return path


def read_json(path: Path, required: bool = True) -> dict[str, Any]:
    """A JSON object from `path` (or {} if it is missing and not `required`); CheckpointError otherwise."""
    if not path.is_file():
        if required:
            raise CheckpointError(f"missing file: {path}")
        return {}
    if path.stat().st_size > MAX_JSON_BYTES:
        raise CheckpointError(f"{path} is larger than {MAX_JSON_BYTES // 2**20} MiB")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({str(err)[:120]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data
