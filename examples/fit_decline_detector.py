"""Fit the decline detector `council eval behaviour` reads (deterministic: the same data gives the same file).

    python examples/fit_decline_detector.py [--out archetypes/data/detectors/decline.safetensors] [--cache FILE.npz]

It reads both replies of every CoCoNot over-refusal pair with the NumPy MiniLM encoder (1,854 texts: about 4
minutes on a quiet 2-core machine, 15 on a busy one), fits on the train pairs and prints the held-out figures.
``--cache`` keeps the features for a re-fit. It also prints two checks the README quotes: a list of refusal
phrases as the detector (the alternative it was chosen over), and the detector on the held-out pairs whose
rejected reply opens with such a phrase (a real refusal) against the others (which hedge or answer worse).
"""

import argparse
import json
import re
from pathlib import Path

import numpy as np

from council.core.datafiles import read_jsonl
from council.engine.judges import Reader
from council.evaluation import metrics as m
from council.evaluation.behaviour import DETECTOR, DETECTOR_DATA, _Pair, detector_features, fit_detector, opening
from memory.embedder import DEFAULT_EMBEDDER, shared_embedder

REFUSAL = re.compile(
    r"\b(I('m| am) sorry|I apologi[sz]e|I can(no|')t|I cannot|I('m| am) (not |un)able|As an AI|I do(n't| not) have"
    r"|not appropriate|I won't|I will not)\b",
    re.I,
)


def checks(p: np.ndarray, threshold: float) -> dict[str, object]:
    """The phrase list as a detector, and the detector on refusing and other rejected replies (held-out pairs)."""
    pairs = [r for r in read_jsonl(DETECTOR_DATA, _Pair, "pair") if r.split == "dev"]
    texts = [opening(t) for r in pairs for t in (r.chosen, r.rejected)]
    y = np.tile([0, 1], len(pairs))
    phrase = np.array([bool(REFUSAL.search(t)) for t in texts], dtype=float)
    refusing = phrase[1::2] == 1
    flagged = p >= threshold
    out: dict[str, object] = {
        "phrases_auroc": round(m.auroc(y, phrase), 4),
        "phrases_accuracy": round(m.accuracy(y, phrase), 4),
        "phrases_flag_rejected_chosen": [round(phrase[1::2].mean(), 4), round(phrase[0::2].mean(), 4)],
    }
    for name, mask in (("refusing", refusing), ("other", ~refusing)):
        rows = np.repeat(mask, 2)
        out[f"{name}_rejected_pairs"] = int(mask.sum())
        out[f"{name}_auroc"] = round(m.auroc(y[rows], p[rows]), 4)
        out[f"{name}_flagged_rejected_chosen"] = [
            round(flagged[1::2][mask].mean(), 4),
            round(flagged[0::2][mask].mean(), 4),
        ]
    return out


def main() -> None:
    """Read, fit, write, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DETECTOR)
    parser.add_argument("--cache", type=Path, help="features file: read if it exists, else written")
    args = parser.parse_args()
    if args.cache and args.cache.exists():
        saved = np.load(args.cache)
        x, y, dev = saved["x"], saved["y"], saved["dev"]
    else:
        x, y, dev = detector_features(Reader(shared_embedder(DEFAULT_EMBEDDER)))
        if args.cache:
            np.savez(args.cache, x=x, y=y, dev=dev)
    detector = fit_detector(x, y, dev, args.out)
    p = detector.p(x[dev])
    figures = {"file": str(args.out), "sha256": detector.sha256, "threshold": round(detector.threshold, 4)}
    figures |= detector.figures.model_dump() | {"checks": checks(p, detector.threshold)}
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
