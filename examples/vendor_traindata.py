"""How `archetypes/data/traindata/` was made from the shared training data (run once; kept for provenance).

Every row gets a ``split`` column: ``dev`` for one text in five, chosen by a hash of its normalised text, so the
same request or scenario falls in the same split in every file, and ``train`` otherwise. The three large ETHICS
facets are cut to a fixed sample (by the same hash), and long replies to their first 1,000 characters (the judges'
encoder reads 256 tokens at most). HH rows get a ``request`` column: the conversation's first human turn.
Sources held out of every judge make the cross-source dev sets in ``examples/`` (``CROSS_SOURCE``): AILuminate,
Open Assistant, MT-bench and Vicuna-bench requests for let go, Social Chemistry actions for revise.
Usage: python examples/vendor_traindata.py ../shared/traindata
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "archetypes" / "data" / "traindata"
REPLY_CHARS = 1000
SAMPLE = 3000  # rows kept of each large ETHICS facet
FILES = {
    # source file: (vendored name, column whose text decides the split, large facet to sample)
    "letgo_coconot.jsonl": ("coconot_letgo.jsonl", "prompt", False),
    "overrefusal_pairs_coconot.jsonl": ("coconot_overrefusal.jsonl", "prompt", False),
    "letgo_selfaware.jsonl": ("selfaware.jsonl", "prompt", False),
    "hh_harmless_train.jsonl": ("hh_harmless.jsonl", "prompt", False),
    "ethics_commonsense_hard.jsonl": ("ethics_commonsense_hard.jsonl", "scenario", False),
    "ethics_deontology.jsonl": ("ethics_deontology.jsonl", "scenario", True),
    "ethics_justice.jsonl": ("ethics_justice.jsonl", "scenario", True),
    "ethics_utilitarianism.jsonl": ("ethics_utilitarianism.jsonl", "more_pleasant", True),
    "letgo_harmful_requests.jsonl": ("harmful_requests.jsonl", "prompt", False),
    "requests_to_answer_people.jsonl": ("requests_people.jsonl", "prompt", False),
    "answers_dolly.jsonl": ("answers_dolly.jsonl", "prompt", False),
}
EXAMPLES = Path(__file__).resolve().parent
# Whole sources no judge learns from: the cross-source dev sets are made of them (see the data card)
HELD_OUT = {"ailuminate", "oasst-prompt-lottery", "mt_bench", "vicuna_bench"}
CROSS_SOURCE_HARMFUL = 300  # AILuminate's hazard prompts kept in the let-go set (all 100 of its benign ones are)


def _hash(text: str) -> int:
    return int(hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest(), 16)


def _rows(path: Path) -> list[dict]:
    """The rows of a JSONL file (only a newline ends a row: texts may hold U+2028)."""
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]


def _first_turn(conversation: str) -> str:
    """The first human turn of an HH conversation (its text up to the first assistant turn)."""
    return conversation.removeprefix("Human:").split("\n\nAssistant:")[0].strip()


def vendor(source_dir: Path) -> None:
    """Write every vendored file from ``source_dir``."""
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (target, key, sample) in FILES.items():
        rows = _rows(source_dir / name)
        rows = [r for r in rows if r.get("source") not in HELD_OUT]
        if sample:
            rows = sorted(rows, key=lambda r: _hash(r["id"]))[:SAMPLE]
            rows.sort(key=lambda r: r["id"])
        with (OUT / target).open("w") as f:
            for row in rows:
                for column in ("chosen", "rejected", "prompt" if target == "requests_people.jsonl" else ""):
                    if column in row and isinstance(row[column], str):
                        row[column] = row[column][:REPLY_CHARS]
                if target == "hh_harmless.jsonl":
                    row["request"] = _first_turn(row["prompt"])
                row["split"] = "dev" if _hash(row[key]) % 5 == 0 else "train"
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


def requests_to_answer() -> None:
    """``requests_to_answer.jsonl``: every request people judged fine to answer, from the vendored files.

    CoCoNot's look-alike requests (both files), SelfAware's answerable questions and the everyday requests that
    open ETHICS deontology scenarios; each text once, keeping its split.
    """
    picked: dict[str, dict[str, str]] = {}
    for name, text, keep in (
        ("coconot_letgo.jsonl", "prompt", lambda r: not r["should_let_go"]),
        ("coconot_overrefusal.jsonl", "prompt", lambda r: True),
        ("selfaware.jsonl", "prompt", lambda r: not r["should_let_go"]),
        ("ethics_deontology.jsonl", "scenario", lambda r: r["scenario"].rstrip().endswith("?")),
    ):
        for line in filter(None, (OUT / name).read_text().split("\n")):
            row = json.loads(line)
            if keep(row):
                key = " ".join(row[text].lower().split())
                picked.setdefault(key, {"id": row["id"], "prompt": row[text], "source": name, "split": row["split"]})
    with (OUT / "requests_to_answer.jsonl").open("w") as f:
        for row in picked.values():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def cross_source(source_dir: Path) -> None:
    """The cross-source dev sets: ``letgo_crosssource.jsonl`` and ``ethics_crosssource.jsonl``.

    Let go: 300 of AILuminate's hazard prompts (lowest hashes), all 100 of its specialised-advice prompts (to be
    answered with care) and every Open Assistant, MT-bench and Vicuna-bench request (to be answered). Revise:
    Social Chemistry's actions judged bad (label 1) or good (label 0), in the rows of ``council eval ethics``.
    """
    harmful = _rows(source_dir / "letgo_harmful_requests.jsonl")
    people = _rows(source_dir / "requests_to_answer_people.jsonl")
    hazards = sorted(
        (r for r in harmful if r["source"] == "ailuminate" and r["should_let_go"]), key=lambda r: _hash(r["id"])
    )
    letgo = hazards[:CROSS_SOURCE_HARMFUL] + [
        r for r in harmful if r["source"] == "ailuminate" and not r["should_let_go"]
    ]
    letgo += [r | {"should_let_go": False} for r in people if r["source"] in HELD_OUT]
    with (EXAMPLES / "letgo_crosssource.jsonl").open("w") as f:
        for r in letgo:
            row = {"id": r["id"], "prompt": r["prompt"], "should_let_go": r["should_let_go"], "source": r["source"]}
            f.write(json.dumps(row | {"category": r.get("category", "")}, ensure_ascii=False) + "\n")
    actions = _rows(source_dir / "moral_actions_socialchem.jsonl")
    with (EXAMPLES / "ethics_crosssource.jsonl").open("w") as f:
        for r in actions:
            if r["judgement"] != "neutral":
                row = {"id": r["id"], "label": int(r["judgement"] == "bad"), "scenario": r["action"]}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


GATE_UNSEEN = (20, 10, 20)  # the gate's unseen requests: hazards, specialised advice, everyday requests


def gate_unseen(source_dir: Path) -> None:
    """``gate_unseen.jsonl``: requests from sources no night and no judge trains on, for the night's gate.

    The persona alone answers them before a version is promoted. 20 of AILuminate's hazard prompts that no dev set
    holds (the next by hash after the cross-source set's 300), to let go of; 10 of its specialised-advice prompts and
    20 Open Assistant, MT-bench and Vicuna-bench requests, to answer. None is in ``behaviour_crosssource.jsonl``,
    the whole-episode check of the README.
    """
    hazards, advice, everyday = GATE_UNSEEN
    harmful = _rows(source_dir / "letgo_harmful_requests.jsonl")
    people = _rows(source_dir / "requests_to_answer_people.jsonl")
    checked = {r["id"] for r in _rows(EXAMPLES / "behaviour_crosssource.jsonl")}
    ranked = sorted(
        (r for r in harmful if r["source"] == "ailuminate" and r["should_let_go"]), key=lambda r: _hash(r["id"])
    )
    picked = ranked[CROSS_SOURCE_HARMFUL : CROSS_SOURCE_HARMFUL + hazards]
    fresh = sorted(
        (
            r
            for r in harmful + people
            if r["id"] not in checked and r["source"] in HELD_OUT and not r.get("should_let_go")
        ),
        key=lambda r: _hash(r["id"]),
    )
    picked += [r for r in fresh if r["source"] == "ailuminate"][:advice]
    picked += [r for r in fresh if r["source"] != "ailuminate"][:everyday]
    with (OUT / "gate_unseen.jsonl").open("w") as f:
        for r in picked:
            row = {
                "id": r["id"],
                "prompt": r["prompt"],
                "should_let_go": bool(r.get("should_let_go")),
                "source": r["source"],
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


# The example day of `council nights`: train rows only, so the gate's dev rows stay unseen by the persona
DAY = (  # vendored file, rows kept, should it be let go (None: the row's own label), which rows
    ("harmful_requests.jsonl", 30, True, lambda r: True),
    ("coconot_letgo.jsonl", 40, None, lambda r: r["should_let_go"]),
    ("selfaware.jsonl", 10, None, lambda r: r["should_let_go"]),
    ("requests_to_answer.jsonl", 50, False, lambda r: True),
    ("requests_people.jsonl", 70, False, lambda r: True),
)


def day_of_prompts() -> None:
    """``examples/day.jsonl``: 200 requests from the training sources' ``train`` rows, 80 of them to let go of.

    Rows are picked and ordered by a hash of their id, so any run of 40 consecutive rows (a night of `council
    nights`) mixes both kinds.
    """
    day = []
    for name, n, label, keep in DAY:
        rows = [r for r in _rows(OUT / name) if r["split"] == "train" and keep(r)]
        for r in sorted(rows, key=lambda r: _hash(r["id"]))[:n]:
            should = r["should_let_go"] if label is None else label
            day.append({"id": r["id"], "prompt": r["prompt"], "should_let_go": should, "source": name})
    with (EXAMPLES / "day.jsonl").open("w") as f:
        for row in sorted(day, key=lambda r: _hash("day" + r["id"])):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    vendor(Path(sys.argv[1]))
    requests_to_answer()
    cross_source(Path(sys.argv[1]))
    gate_unseen(Path(sys.argv[1]))
    day_of_prompts()
