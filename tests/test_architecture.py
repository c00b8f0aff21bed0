"""The architecture holds: every module sits in a layer, functions stay short, backends are not probed, docs match."""

import ast
import configparser
import re
from pathlib import Path

from council.docs import README, render

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("council", "archetypes", "memory", "sleep")
MAX_LINES = 60


def package_files():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_module_sits_in_a_layer_of_the_import_contract():
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    layers = [
        re.split(r"\s*[:|]\s*", line.strip()) for line in config["importlinter:contract:layers"]["layers"].split("\n")
    ]
    names = [name for layer in layers for name in layer if name]
    assert len(layers) >= 6 and "council.core" in names[-4:]  # vocabulary is the bottom layer
    outside = [
        module_name(p)
        for p in package_files()
        if module_name(p) not in PACKAGES
        and not any(module_name(p) == n or module_name(p).startswith(n + ".") for n in names)
    ]
    assert outside == [], f"modules in no layer of .importlinter: {outside}"


def test_no_function_outside_the_tests_is_longer_than_sixty_lines():
    long = []
    for path in package_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= MAX_LINES:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert long == []


def test_backends_are_checked_by_their_declared_protocols_not_probed():
    probes = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in package_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\b(getattr|hasattr)\(", line)
    ]
    assert probes == []


def test_the_readme_tables_are_what_the_code_says():
    text = README.read_text(encoding="utf-8")
    assert "<!-- generated: commands -->" in text and "<!-- generated: settings -->" in text
    assert "<!-- generated: migrations -->" in text
    assert render(text) == text, "the README is out of date: run `python -m council.docs`"
    assert (
        "`council eval recall [FILE]" in text
        and "`COUNCIL_MEMORY__MIN_SCORE`" in text
        and "`0009_sleep_claims`" in text
    )


def test_the_readme_points_users_at_no_file_outside_the_package():
    """Users have the package and their own files, not the developers' checkout around it."""
    text = README.read_text(encoding="utf-8")
    assert re.findall(r"`[^`\n]*(?:\.\./|/work/|shared/evaldata)[^`\n]*`", text) == []
    assert "`train.dev_set` pointing at a JSONL file of your own" in text
