"""How `archetypes/data/traindata/` was made from the shared training data (run once; kept for provenance).

Every row gets a ``split`` column: ``dev`` for one text in five, chosen by a hash of its normalised text, so the
same request or scenario falls in the same split in every file, and ``train`` otherwise. The three large ETHICS
facets are cut to a fixed sample (by the same hash), and long replies to their first 1,000 characters (the judges'
encoder reads 256 tokens at most). HH rows get a ``request`` column: the conversation's first human turn.
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
}


def _hash(text: str) -> int:
    return int(hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest(), 16)


def _first_turn(conversation: str) -> str:
    """The first human turn of an HH conversation (its text up to the first assistant turn)."""
    return conversation.removeprefix("Human:").split("\n\nAssistant:")[0].strip()


def vendor(source_dir: Path) -> None:
    """Write every vendored file from ``source_dir``."""
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (target, key, sample) in FILES.items():
        rows = [json.loads(line) for line in (source_dir / name).read_text().splitlines() if line.strip()]
        if sample:
            rows = sorted(rows, key=lambda r: _hash(r["id"]))[:SAMPLE]
            rows.sort(key=lambda r: r["id"])
        with (OUT / target).open("w") as f:
            for row in rows:
                for column in ("chosen", "rejected"):
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
        for line in (OUT / name).read_text().splitlines():
            row = json.loads(line)
            if keep(row):
                key = " ".join(row[text].lower().split())
                picked.setdefault(key, {"id": row["id"], "prompt": row[text], "source": name, "split": row["split"]})
    with (OUT / "requests_to_answer.jsonl").open("w") as f:
        for row in picked.values():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    vendor(Path(sys.argv[1]))
    requests_to_answer()
