"""Load built-in and user YAML definitions of archetypes, pools and personas."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from archetypes.definitions import Archetype, Persona, Pool
from council.core.datafiles import parse_yaml
from council.core.errors import DefinitionError, NotFoundError, first_problem

Definition = Archetype | Pool | Persona
T = TypeVar("T", bound=Definition)
BUILTIN = Path(__file__).parent / "data"
KINDS: dict[str, type[Archetype] | type[Pool] | type[Persona]] = {
    "archetypes": Archetype,
    "pools": Pool,
    "personas": Persona,
}


def _load_file(path: Path, model: type[Archetype] | type[Pool] | type[Persona]) -> Definition:
    where = str(path)
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"), path)
    except yaml.YAMLError as exc:
        mark = exc.problem_mark if isinstance(exc, yaml.MarkedYAMLError) else None
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise DefinitionError(
            f"{where}: invalid YAML{at}", "fix the YAML syntax (indentation, colons, quotes)"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(f"{where}: cannot read ({exc})", "check the file exists and is UTF-8 text") from exc
    if not isinstance(data, dict):
        raise DefinitionError(
            f"{where}: expected a mapping of fields", f"write the {model.__name__} fields as key: value"
        )
    data.setdefault("name", path.stem)
    if data["name"] != path.stem:
        raise DefinitionError(
            f"{where}: field 'name' is {data['name']!r} but the file is named {path.stem!r}",
            f"rename the file to {data['name']}.yaml or set name: {path.stem}",
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        loc, message, kind = first_problem(exc.errors())
        allowed = ", ".join(model.model_fields)
        fix = f"remove it; allowed fields: {allowed}" if kind == "extra_forbidden" else "correct that value"
        raise DefinitionError(f"{where}: field '{loc or '(top level)'}': {message}", fix) from exc


@dataclass
class Library:
    """Every known definition, built-ins first, then user files that add to or override them."""

    archetypes: dict[str, Archetype] = field(default_factory=dict)
    pools: dict[str, Pool] = field(default_factory=dict)
    personas: dict[str, Persona] = field(default_factory=dict)
    sources: dict[str, Path] = field(default_factory=dict)  # "kind/name" -> the file it came from

    user_dir: Path | None = None

    @classmethod
    def load(cls, user_dir: Path | None = None) -> Library:
        """Load the package's definitions, then ``user_dir/{archetypes,pools,personas}/*.yaml``.

        An archetype's judge is bound to its weights file here: the file's SHA-256 becomes part of the
        definition, and so of the archetype's content hash.
        """
        lib = cls(user_dir=user_dir)
        roots = [BUILTIN] + ([user_dir] if user_dir else [])
        for root in roots:
            for kind, model in KINDS.items():
                folder = root / kind
                if folder.is_dir():
                    for path in sorted(folder.glob("*.y*ml")):
                        item = _load_file(path, model)
                        lib.of_kind(kind)[item.name] = item
                        lib.sources[f"{kind}/{item.name}"] = path
        for name, archetype in lib.archetypes.items():
            if archetype.judge is not None:
                weights = lib.judge_weights(archetype)
                digest = hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None
                judge = archetype.judge.model_copy(update={"weights_sha256": digest})
                lib.archetypes[name] = archetype.model_copy(update={"judge": judge})
        lib._check_pools()
        return lib

    def resolve(self, relative: str) -> Path:
        """A path named in a definition: absolute, or under the user's folder, or under the package's data."""
        path = Path(relative).expanduser()
        if path.is_absolute():
            return path
        if self.user_dir is not None and (self.user_dir / path).exists():
            return self.user_dir / path
        return BUILTIN / path

    def judge_weights(self, archetype: Archetype) -> Path:
        """Where ``archetype``'s learnt heads are read from (a fitted file in the user's folder comes first)."""
        assert archetype.judge is not None
        return self.resolve(archetype.judge.weights or f"judges/{archetype.name}.safetensors")

    def fitted_weights(self, archetype: Archetype) -> Path:
        """Where `council archetypes fit` writes ``archetype``'s heads: always the user's folder."""
        assert archetype.judge is not None and self.user_dir is not None
        relative = Path(archetype.judge.weights or f"judges/{archetype.name}.safetensors")
        return relative if relative.is_absolute() else self.user_dir / relative

    def _check_pools(self) -> None:
        for pool in self.pools.values():
            for name in pool.archetypes:
                if name not in self.archetypes:
                    raise DefinitionError(
                        f"{self.sources[f'pools/{pool.name}']}: archetype {name!r} is not defined",
                        f"add archetypes/{name}.yaml to your COUNCIL_HOME or remove {name!r} from the pool",
                    )

    def of_kind(self, kind: str) -> dict[str, Any]:
        """The definitions of one kind of ``KINDS`` by name."""
        kinds: dict[str, dict[str, Any]] = {
            "archetypes": self.archetypes,
            "pools": self.pools,
            "personas": self.personas,
        }
        return kinds[kind]

    def pool(self, name: str) -> Pool:
        """Return the pool called ``name``."""
        return self._get(self.pools, name, "pool")

    def archetype(self, name: str) -> Archetype:
        """Return the archetype called ``name``."""
        return self._get(self.archetypes, name, "archetype")

    def persona(self, name: str) -> Persona:
        """Return the persona called ``name``."""
        return self._get(self.personas, name, "persona")

    def members(self, pool: Pool) -> list[Archetype]:
        """Return the archetypes that sit on ``pool``, in pool order."""
        return [self.archetypes[name] for name in pool.archetypes]

    @staticmethod
    def _get(table: dict[str, T], name: str, kind: str) -> T:
        try:
            return table[name]
        except KeyError:
            known = ", ".join(sorted(table)) or "none"
            raise NotFoundError(f"no {kind} named {name!r}", f"use one of: {known}") from None
