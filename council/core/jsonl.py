"""Read JSONL files of typed rows, with one-line errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from council.core.errors import DefinitionError, one_line

Row = TypeVar("Row", bound=BaseModel)


def read_jsonl(path: Path, model: type[Row], what: str, limit: int | None = None) -> list[Row]:
    """Validate each line of ``path`` as ``model`` (at most ``limit`` rows); an empty file is an error too."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DefinitionError(f"cannot read {path} ({exc.strerror})", "check the path") from exc
    rows: list[Row] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(model.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise DefinitionError(
                f"{path}:{number}: not a valid {what} row ({one_line(exc)})",
                f"each line must be a JSON object with {', '.join(model.model_fields)}",
            ) from exc
        if limit and len(rows) >= limit:
            break
    if not rows:
        raise DefinitionError(f"{path} has no rows", "give a JSONL file with one item per line")
    return rows
