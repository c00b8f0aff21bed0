"""The mode-lock state machine and logits mask: a property test over random logits, and unit cases."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from council.core.modelock import AI_CLOSE, QUOTE_CLOSE, QUOTE_OPEN, ModeLock, Vocabulary, parse, pending_prefixes

# Tags split over several tokens, as SmolLM2's tokenizer does, plus whole tags, mixed tokens and plain words.
TOY = [
    "Hello",
    " world",
    ".",
    " you",
    "<",
    "</",
    "AI",
    ">",
    "_quoting",
    "_human",
    "AI_",
    "quoting_human>",
    "<AI>",
    "</AI>",
    "<AI_quoting_human>",
    "</AI_quoting_human>",
    "</AI_quoting_human><AI>",
    "> ok",
    "</AI> and the human",
    " said",
    ' "hi"',
    "AI>",
    "human>",
    "<A",
    "I_quoting_human>",
]
VOCAB = Vocabulary(TOY)


def run(logits_rows, start_text):
    """Greedy decoding over random logits with the lock; returns the whole text and whether </AI> ended it."""
    lock = ModeLock(VOCAB, start_text)
    text = start_text
    for row in logits_rows:
        logits = np.array(row, dtype=float)
        logits[lock.banned()] = -np.inf
        if np.all(np.isneginf(logits)):
            break
        piece = TOY[int(np.argmax(logits))]
        cut = lock.accept(piece)
        text += piece if cut is None else cut
        if cut is not None:
            return text, True
    return text, False


starts = st.sampled_from(["", "I think ", f"She said {QUOTE_OPEN}no", f"{QUOTE_OPEN}wait</AI", "x<AI_quoting"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.floats(-10, 10), min_size=len(TOY), max_size=len(TOY)), min_size=1, max_size=40), starts)
def test_locked_decoding_only_ever_produces_legal_tags_and_ai_close_ends_it(rows, start):
    before = parse(start)
    text, ended = run(rows, start)
    after = parse(text)
    assert after.violations == before.violations  # nothing illegal was added
    assert all(legal for _, _, legal in after.tags[len(before.tags) :])
    if ended:
        assert text.endswith(AI_CLOSE) and after.mode == "human"
    else:
        assert after.mode in ("ai", "quote")


def test_parse_reads_modes_and_flags_illegal_tags():
    result = parse(f"I heard {QUOTE_OPEN}give it back{QUOTE_CLOSE} and I agreed.{AI_CLOSE} human text")
    assert [(s.mode, s.start < s.end) for s in result.spans] == [
        ("ai", True),
        ("quote", True),
        ("ai", True),
        ("human", True),
    ]
    assert result.ended and result.violations == 1  # the human text after </AI>
    nested = parse(f"{QUOTE_OPEN}a{AI_CLOSE}b")
    assert [legal for _, _, legal in nested.tags] == [True, False] and nested.mode == "quote"


def test_pending_prefixes_find_tags_being_written():
    assert pending_prefixes("so </AI") == ["</AI"]
    assert "<" in pending_prefixes("a <") and pending_prefixes("done.") == []


def test_the_mask_depends_on_the_mode():
    ai = ModeLock(VOCAB, "Sure: ")
    quote = ModeLock(VOCAB, f"She said {QUOTE_OPEN}no")
    assert TOY.index("</AI>") not in ai.banned() and TOY.index("</AI_quoting_human>") in ai.banned()
    assert TOY.index("</AI>") in quote.banned() and TOY.index("</AI_quoting_human>") not in quote.banned()
    assert TOY.index("</AI_quoting_human><AI>") in quote.banned()  # legal close, then an illegal <AI>
    partial = ModeLock(VOCAB, f"{QUOTE_OPEN}wait</AI")
    assert TOY.index(">") in partial.banned() and TOY.index("_quoting") not in partial.banned()


def test_a_locked_persona_stops_at_ai_close_and_reflects_after_a_quote(fake_setup, council_home):
    from council.engine.runner import run_episode
    from tests.conftest import write_yaml

    write_yaml(council_home, "personas", "tester", "character: You are a test persona.\nmodel: fake\nmode_lock: true\n")
    rt, fake = fake_setup(reflection={"min_segment_tokens": 2})
    fake.enqueue(f"He told me {QUOTE_OPEN}just quit{QUOTE_CLOSE} but I think you should stay.{AI_CLOSE} Human: thanks")
    episode = run_episode(rt, "Should I quit?")
    assert [p.boundary for p in episode.reflection_points] == ["quote_end", "end"]
    assert episode.final_text.endswith(AI_CLOSE) and "Human: thanks" not in episode.final_text
    assert parse(episode.final_text).violations == 0
    votes = [c for c in fake.history if c.kind == "score"]
    assert "quotes a human" in votes[0].messages[-1].content
    assert "<AI_quoting_human>" in fake.history[0].chat.messages[0].content  # the protocol is in the system prompt


def test_quoted_words_are_marked_in_memory_and_spans_are_on_the_record():
    from datetime import datetime, timezone

    from council.core.episode import Episode
    from memory.vector import documents_for

    text = f"My friend said {QUOTE_OPEN}I hate you{QUOTE_CLOSE}, and I answered kindly.{AI_CLOSE}"
    episode = Episode(
        episode_id="q1",
        created_at=datetime.now(timezone.utc),
        prompt="p",
        persona="x",
        pool="default",
        status="finished",
        final_text=text,
    )
    exchange, request, passage = documents_for(episode)
    assert request.kind == "request" and passage.kind == "answer"
    for doc in (exchange, passage):  # the answer is marked wherever it is stored
        assert '[a human, quoted: "I hate you"]' in doc.text and "<AI_quoting_human>" not in doc.text
    assert [s["mode"] for s in episode.model_dump()["mode_spans"]] == ["ai", "quote", "ai"]


def test_a_locked_persona_that_closed_its_turn_adds_no_closing(fake_setup, council_home):
    from tests.conftest import write_yaml

    write_yaml(council_home, "personas", "tester", "character: You are a test persona.\nmodel: fake\nmode_lock: true\n")
    rt, fake = fake_setup()
    fake.enqueue("This should never be generated.")
    assert rt.writer.close("p", f"I am done.{AI_CLOSE}", "let_go", 0) == ""
    assert not [c for c in fake.history if c.kind == "generate"]
