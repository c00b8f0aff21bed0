"""Read the project's data files: YAML documents, and JSONL files of typed rows with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from council.core.errors import DefinitionError, one_line

RowModel = TypeVar("RowModel", bound=BaseModel)


_YAML_LOADER = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader  # libyaml parses 10x faster


def parse_yaml(text: str, where: Path) -> Any:  # noqa: ANN401 - whatever the document holds
    """``yaml.safe_load`` of the file ``where``'s ``text``, with libyaml when PyYAML was built with it.

    Empty documents (a trailing ``---``) are ignored; several documents are a ``DefinitionError``. Raises
    ``yaml.YAMLError`` for invalid YAML.
    """
    documents = [d for d in yaml.load_all(text, Loader=_YAML_LOADER) if d is not None]
    if len(documents) > 1:
        raise DefinitionError(
            f"{where}: the file holds several YAML documents ({len(documents)}, separated by ---) and must hold one",
            "keep one document: remove the extra --- lines, or split the file in two",
        )
    return documents[0] if documents else None


def read_jsonl(
    path: Path, model: type[RowModel], what: str, limit: int | None = None, *, empty_ok: bool = False
) -> list[RowModel]:
    """Validate each line of ``path`` as ``model`` (at most ``limit``); an empty file is refused unless ``empty_ok``."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # JSONL: only \n ends a row (not U+2028)
    except OSError as exc:
        raise DefinitionError(f"cannot read {path} ({exc.strerror})", "check the path") from exc
    rows: list[RowModel] = []
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
    if not rows and not empty_ok:
        raise DefinitionError(f"{path} has no rows", "give a JSONL file with one item per line")
    return rows
