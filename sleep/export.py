"""Write the night's preference pairs as TRL-ready JSONL, with a dataset card next to them."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Literal

from council.core.errors import StorageError
from council.core.pairs import SOURCES, PreferencePair

Format = Literal["conversational", "standard"]


def plain_chat(messages: Sequence[dict[str, str]]) -> str:
    """A template-free rendering, for backends whose chat template is not known here."""
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "


def write_dataset(
    out_dir: Path,
    pairs: list[PreferencePair],
    *,
    pool: str,
    hashes: dict[str, str],
    fmt: Format = "conversational",
    render: Callable[[Sequence[dict[str, str]]], str] = plain_chat,
) -> Path:
    """Write ``pairs.jsonl`` and ``README.md`` under ``out_dir`` atomically; returns the JSONL path."""
    rows = [p.conversational() if fmt == "conversational" else p.standard(render) for p in pairs]
    data = out_dir / "pairs.jsonl"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(data, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        _atomic_write(out_dir / "README.md", dataset_card(pairs, pool=pool, hashes=hashes, fmt=fmt))
    except OSError as exc:
        raise StorageError(
            f"cannot write the dataset to {out_dir} ({exc.strerror})",
            "free disk space or pass --out DIR; the pairs stay in the episode log",
        ) from exc
    return data


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def dataset_card(pairs: list[PreferencePair], *, pool: str, hashes: dict[str, str], fmt: Format) -> str:
    """The dataset card: generator version, pool and archetype hashes, counts per source, date, source episodes."""
    counts = Counter(p.source for p in pairs)
    episodes = sorted({p.episode_id for p in pairs})
    lines = [
        "---",
        "task_categories: [text-generation]",
        "tags: [dpo, preference, archetype-council]",
        "configs:",
        "- config_name: default",
        "  data_files: pairs.jsonl",
        "---",
        f"# Preference pairs from the {pool} council",
        "",
        "Written by `council sleep`: the council's night-time judgement of the persona's logged episodes, as",
        f"preference pairs for DPO in TRL's {fmt} format. Stop-reflect markers are kept inside the texts.",
        "",
        f"- generator: archetype-council {version('archetype-council')}",
        f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- pool: {pool}",
        f"- pairs: {len(pairs)} (" + ", ".join(f"{s} {counts[s]}" for s in SOURCES) + ")",
        "",
        "| definition | content hash |",
        "| --- | --- |",
        *[f"| {name} | `{digest}` |" for name, digest in sorted(hashes.items())],
        "",
        "Sources: **revision** (the rewrite the council accepted over the original segment), **ranking** (the",
        "better over the worse of two sampled answers of like length, the widest apart by the council's weighted",
        "probability of *continue*),",
        "**let_go** (the graceful close over a continuation that pushes on; from the answer's start when the council",
        "let go on reading the request), **marker** (the accepted answer with the stop-reflect marker at its",
        "reflection points over the same answer without it).",
        "",
        f"Source episodes ({len(episodes)}): " + ", ".join(episodes),
        "",
    ]
    return "\n".join(lines)
