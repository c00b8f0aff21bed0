import pytest

from archetypes.definitions import Archetype, Judge, JudgeSource, Pool
from council.core.episode import Vote
from council.engine.aggregation import aggregate


def arch(name, weight=1.0, veto=False):
    return Archetype(name=name, title=name.title(), voice="v", perspective="p", weight=weight, veto=veto)


def vote(name, verdict, confidence=0.8):
    return Vote(archetype=name, verdict=verdict, confidence=confidence)


MEMBERS = {a.name: a for a in [arch("a"), arch("b"), arch("c", weight=2.5), arch("d", veto=True)]}


def pool(rule, **kw):
    return Pool(name="p", archetypes=list(MEMBERS), rule=rule, **kw)


def test_weighted_majority_follows_weight_not_headcount():
    votes = [vote("a", "continue"), vote("b", "continue"), vote("c", "revise"), vote("d", "let_go")]
    d = aggregate(pool("weighted_majority"), votes, MEMBERS)
    assert d.decision == "revise"
    assert d.support == pytest.approx(2.5 / 5.5)
    assert d.dissent == ["a", "b", "d"]


def test_weighted_majority_tie_goes_to_confidence_then_gentler_verdict():
    votes = [vote("a", "continue", 0.6), vote("b", "revise", 0.9)]
    assert aggregate(pool("weighted_majority"), votes, MEMBERS).decision == "revise"
    votes = [vote("a", "continue", 0.7), vote("b", "let_go", 0.7)]
    assert aggregate(pool("weighted_majority"), votes, MEMBERS).decision == "continue"


def test_unanimity_needs_every_vote_to_continue():
    votes = [vote("a", "continue"), vote("b", "continue"), vote("c", "continue"), vote("d", "let_go")]
    d = aggregate(pool("unanimity"), votes, MEMBERS)
    assert d.decision == "let_go"
    assert set(d.dissent) == {"a", "b", "c"}
    all_continue = [vote(n, "continue") for n in MEMBERS]
    assert aggregate(pool("unanimity"), all_continue, MEMBERS).decision == "continue"


def test_veto_holder_overrides_the_majority():
    votes = [vote("a", "continue"), vote("b", "continue"), vote("c", "continue"), vote("d", "let_go", 0.4)]
    d = aggregate(pool("veto"), votes, MEMBERS)
    assert d.decision == "let_go"
    assert "veto by d" in d.reason
    votes[-1] = vote("d", "continue")
    votes[0] = vote("a", "revise")
    assert aggregate(pool("veto"), votes, MEMBERS).decision == "continue"


def test_quorum_rule_counts_objections_together():
    votes = [vote("a", "revise"), vote("b", "let_go"), vote("c", "continue"), vote("d", "continue")]
    assert aggregate(pool("quorum", quorum=0.6), votes, MEMBERS).decision == "continue"
    votes = [vote("a", "revise"), vote("b", "let_go"), vote("c", "revise"), vote("d", "continue")]
    d = aggregate(pool("quorum", quorum=0.6), votes, MEMBERS)
    assert d.decision == "revise"
    assert "quorum" in d.reason


def test_a_lower_let_go_quorum_lets_one_voice_let_go_while_revising_needs_more():
    one_let_go = [vote("a", "continue"), vote("b", "continue"), vote("c", "let_go"), vote("d", "continue")]
    one_revise = [vote("a", "continue"), vote("b", "continue"), vote("c", "revise"), vote("d", "continue")]
    strict = pool("quorum", quorum=0.5)
    lenient = pool("quorum", quorum=0.5, let_go_quorum=0.25)
    assert aggregate(strict, one_let_go, MEMBERS).decision == "continue"
    d = aggregate(lenient, one_let_go, MEMBERS)
    assert d.decision == "let_go" and "quorum of 25%" in d.reason  # c holds 2.5 of 5.5 weight
    assert aggregate(lenient, one_revise, MEMBERS).decision == "continue"


def test_abstentions_carry_no_weight_and_are_recorded():
    votes = [
        Vote(archetype="c", verdict=None, confidence=0, error="boom"),
        vote("a", "revise"),
        vote("b", "continue", 0.5),
    ]
    d = aggregate(pool("weighted_majority"), votes, MEMBERS)
    assert d.abstained == ["c"]
    assert d.decision == "revise"
    everyone_failed = [Vote(archetype=n, verdict=None, confidence=0) for n in MEMBERS]
    d = aggregate(pool("veto"), everyone_failed, MEMBERS)
    assert (d.decision, d.support, d.abstained) == ("continue", 0.0, list(MEMBERS))


JUDGE = Judge(sources=[JudgeSource(file="x.jsonl", text="t", label="l", labels={"1": "let_go", "0": "continue"})])
JUDGED = {n: a.model_copy(update={"judge": JUDGE}) for n, a in MEMBERS.items() if n != "c"} | {"c": MEMBERS["c"]}


def judged(name, let_go, revise, coverage):
    """A judge's vote as the council makes it: P(let go), P(revise) and how much its data covers the text."""
    verdict = "let_go" if let_go >= 0.5 else "revise" if revise >= 0.5 else "continue"
    probs = {"continue": 1 - max(let_go, revise), "revise": revise, "let_go": let_go}
    return Vote(archetype=name, verdict=verdict, confidence=probs[verdict], probs=probs, coverage=coverage)


def test_pooled_follows_the_member_whose_data_covers_the_text():
    # a specialist far from the text raises a false alarm; the member whose data is close says no
    votes = [
        judged("a", 0.9, 0.1, {"let_go": 0.3, "revise": 0.5}),
        judged("b", 0.2, 0.1, {"let_go": 0.8, "revise": 0.5}),
    ]
    d = aggregate(pool("pooled"), votes, JUDGED)
    assert d.decision == "continue" and d.dissent == ["a"]
    # the same two votes with the coverages swapped: now the alarm is where its data speaks
    votes = [
        judged("a", 0.9, 0.1, {"let_go": 0.8, "revise": 0.5}),
        judged("b", 0.2, 0.1, {"let_go": 0.3, "revise": 0.5}),
    ]
    d = aggregate(pool("pooled"), votes, JUDGED)
    assert d.decision == "let_go" and "led by a" in d.reason
    # with sharpness 0 every member counts by its weight alone: mean log-odds of 0.9 and 0.2 is above 0.5
    assert aggregate(pool("pooled", sharpness=0), votes, JUDGED).decision == "let_go"


def test_pooled_lets_go_at_the_pools_threshold_and_says_which_it_was_held_to():
    votes = [judged("a", 0.35, 0.1, {"let_go": 0.5, "revise": 0.5})]
    held = aggregate(pool("pooled"), votes, JUDGED)
    assert (
        held.decision == "continue"
        and held.reason == "pooled P(let_go) 0.35 < 0.50, P(revise) 0.10 < 0.50: no objection"
    )
    lower = aggregate(pool("pooled", let_go_at=0.3), votes, JUDGED)
    assert lower.decision == "let_go" and lower.reason.startswith("pooled P(let_go) 0.35 ≥ 0.30, led by a")
    with pytest.raises(ValueError, match="let_go_at"):
        pool("pooled", let_go_at=1.0)


def test_pooled_leaves_a_judge_out_of_a_judgment_it_never_learnt():
    # b has no let-go head (no let_go coverage): its P(let go) of 0 cannot cancel a's
    votes = [judged("a", 0.7, 0.1, {"let_go": 0.5, "revise": 0.5}), judged("b", 0.0, 0.1, {"revise": 0.9})]
    assert aggregate(pool("pooled"), votes, JUDGED).decision == "let_go"
    # revise pools both: b's data covers the text, its 0.1 outweighs a's 0.6
    votes = [judged("a", 0.1, 0.6, {"let_go": 0.5, "revise": 0.3}), judged("b", 0.0, 0.1, {"revise": 0.9})]
    assert aggregate(pool("pooled"), votes, JUDGED).decision == "continue"


def test_pooled_counts_token_votes_with_the_judges_mean_coverage():
    token = Vote(
        archetype="c", verdict="let_go", confidence=0.9, probs={"continue": 0.05, "revise": 0.05, "let_go": 0.9}
    )
    votes = [judged("a", 0.3, 0.1, {"let_go": 0.6, "revise": 0.6}), token]
    # c, without a judge, weighs 2.5 against a's 1 at the same coverage: log-odds (2.5 * 2.2 + 1 * -0.85) / 3.5 > 0
    assert aggregate(pool("pooled"), votes, JUDGED).decision == "let_go"
