"""Aggregation rules: how a pool turns its archetypes' votes into one decision, keeping dissent."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from archetypes.definitions import VERDICTS, Archetype, Pool, Verdict
from council.core.episode import Decision, Vote

Tally = dict[Verdict, float]
_SEVERITY = {v: i for i, v in enumerate(VERDICTS)}


def _winner(tally: Tally, confidence: Tally, among: tuple[Verdict, ...] = VERDICTS) -> Verdict:
    """Most weight wins; ties go to more summed confidence, then to the gentler verdict."""
    return max(among, key=lambda v: (tally[v], confidence[v], -_SEVERITY[v]))


def _weighted_majority(
    pool: Pool, votes: list[Vote], members: Mapping[str, Archetype], t: Tally, c: Tally
) -> tuple[Verdict, str]:
    return _winner(t, c), "most weight"


def _unanimity(
    pool: Pool, votes: list[Vote], members: Mapping[str, Archetype], t: Tally, c: Tally
) -> tuple[Verdict, str]:
    if t["revise"] == 0 and t["let_go"] == 0:
        return "continue", "everyone voted continue"
    return _winner(t, c, ("revise", "let_go")), "continuing needs every vote"


def _veto(pool: Pool, votes: list[Vote], members: Mapping[str, Archetype], t: Tally, c: Tally) -> tuple[Verdict, str]:
    vetoes = [v for v in votes if members[v.archetype].veto and v.verdict in ("revise", "let_go")]
    if vetoes:
        strongest = max(vetoes, key=lambda v: (v.confidence, _SEVERITY[v.verdict or "continue"]))
        return strongest.verdict or "revise", f"veto by {strongest.archetype}"
    return _winner(t, c), "no veto; most weight"


def _quorum(pool: Pool, votes: list[Vote], members: Mapping[str, Archetype], t: Tally, c: Tally) -> tuple[Verdict, str]:
    total = sum(t.values())
    needs = {"let_go": pool.let_go_quorum or pool.quorum, "revise": pool.quorum}
    for verdict in ("let_go", "revise"):
        if t[verdict] / total >= needs[verdict]:
            return verdict, f"{verdict} reached the quorum of {needs[verdict]:.0%}"
    if (t["revise"] + t["let_go"]) / total >= pool.quorum:
        return _winner(t, c, ("revise", "let_go")), f"objections reached the quorum of {pool.quorum:.0%}"
    return "continue", f"no objection reached the quorum of {pool.quorum:.0%}"


POOLED_EPS = 1e-6  # no member's log-odds count for more than ±13.8 in the pooled sum


def pooled_probability(
    judgment: str, votes: list[Vote], members: Mapping[str, Archetype], sharpness: float
) -> tuple[float, dict[str, float]] | None:
    """The council's P(``judgment``): members' log-odds weighted by how much each one's data covers the text.

    A judge takes part in the judgments it learnt and had something to read for (its vote's ``coverage`` names
    them); an archetype without a judge (a token vote) takes part in both, with the mean coverage of the judges.
    Member i's share is ``weight_i * exp(sharpness * coverage_i)``, normalised, so a specialist counts where its
    data speaks to the text and little where it does not: its false alarms there no longer add up. Returns the
    probability and each member's share, or None if nobody judges it.
    """
    judged = [v for v in votes if judgment in v.coverage or members[v.archetype].judge is None]
    if not judged:
        return None
    known = [v.coverage[judgment] for v in judged if judgment in v.coverage]
    fallback = sum(known) / len(known) if known else 0.0
    closeness = {v.archetype: v.coverage.get(judgment, fallback) for v in judged}
    top = max(closeness.values())
    raw = {n: members[n].weight * math.exp(sharpness * (c - top)) for n, c in closeness.items()}
    shares = {n: r / sum(raw.values()) for n, r in raw.items()}
    z = sum(shares[v.archetype] * logit(v.probs.get(judgment, 0.0), POOLED_EPS) for v in judged)
    return 1 / (1 + math.exp(-z)), shares


def logit(p: float, eps: float = 1e-9) -> float:
    """Log-odds of ``p``, clipped to [eps, 1 - eps] so a certain 0 or 1 stays finite."""
    p = min(max(p, eps), 1 - eps)
    return math.log(p / (1 - p))


def _pooled(pool: Pool, votes: list[Vote], members: Mapping[str, Archetype], t: Tally, c: Tally) -> tuple[Verdict, str]:
    said = []
    thresholds: dict[Verdict, float] = {"let_go": pool.let_go_at, "revise": 0.5}
    for judgment, at in thresholds.items():
        pooled = pooled_probability(judgment, votes, members, pool.sharpness)
        if pooled is None:
            continue
        p, shares = pooled
        leading = max(shares, key=lambda n: shares[n])
        if p >= at:
            return judgment, f"pooled P({judgment}) {p:.2f} ≥ {at:.2f}, led by {leading} ({shares[leading]:.0%})"
        said.append(f"P({judgment}) {p:.2f} < {at:.2f}")
    return "continue", f"pooled {', '.join(said) or 'nothing'}: no objection"


RULES: dict[str, Callable[..., tuple[Verdict, str]]] = {
    "weighted_majority": _weighted_majority,
    "unanimity": _unanimity,
    "veto": _veto,
    "quorum": _quorum,
    "pooled": _pooled,
}


def aggregate(pool: Pool, votes: list[Vote], members: Mapping[str, Archetype]) -> Decision:
    """Apply the pool's rule to the votes. Abstentions carry no weight; all abstaining means continue."""
    active = [v for v in votes if v.verdict is not None]
    abstained = [v.archetype for v in votes if v.verdict is None]
    if not active:
        return Decision(
            decision="continue",
            rule=pool.rule,
            support=0.0,
            abstained=abstained,
            reason="every archetype abstained",
        )
    tally: Tally = {v: 0.0 for v in VERDICTS}
    confidence: Tally = {v: 0.0 for v in VERDICTS}
    for vote in active:
        assert vote.verdict is not None
        tally[vote.verdict] += members[vote.archetype].weight
        confidence[vote.verdict] += vote.confidence
    decision, reason = RULES[pool.rule](pool, active, members, tally, confidence)
    return Decision(
        decision=decision,
        rule=pool.rule,
        support=tally[decision] / sum(tally.values()),
        dissent=[v.archetype for v in active if v.verdict != decision],
        abstained=abstained,
        reason=reason,
    )
