import pytest

from council.core.settings import ReflectionSettings
from council.core.text import whole_sentences
from council.engine.reflection import ReflectionPolicy


@pytest.fixture
def policy():
    return ReflectionPolicy(ReflectionSettings(min_segment_tokens=3, max_segment_tokens=50))


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        ("Tell them how you feel.", "sentence"),
        ("Is that fair?", "sentence"),
        ('She said "stop."', "sentence"),
        ("First paragraph here\n\n", "paragraph"),
        ("- buy some milk\n", "list_item"),
        ("2. call your friend\n", "list_item"),
        ("Prices rose by 3.", None),
        ("Bring fruit, e.g.", None),
        ("Tell them how you", None),
    ],
)
def test_logical_boundaries(policy, segment, expected):
    assert policy.boundary("", segment, n_tokens=10) == expected


def test_min_length_holds_back_logical_boundaries_but_not_the_marker(policy):
    assert policy.boundary("", "Yes.", n_tokens=1) is None
    assert policy.boundary("", "Yes<|reflect|>", n_tokens=1) == "marker"
    assert policy.strip_marker("Yes<|reflect|>") == "Yes"


def test_max_length_forces_a_point(policy):
    assert policy.boundary("", "and then and then and", n_tokens=50) == "max_length"


def test_no_sentence_break_inside_a_code_block_only_at_its_end(policy):
    before = "Here is code:\n"
    assert policy.boundary(before, "```python\nx = 1.\n", n_tokens=8) is None
    assert policy.boundary(before, "```python\nx = 1\n```\n", n_tokens=10) == "code_block"


def test_custom_marker_and_disabled_sentences():
    p = ReflectionPolicy(ReflectionSettings(marker="<pause>", sentences=False, min_segment_tokens=1))
    assert p.boundary("", "One. Two.", n_tokens=5) is None
    assert p.boundary("", "One<pause>", n_tokens=2) == "marker"


def test_whole_sentences_cuts_the_fragment():
    assert whole_sentences("It hurts. I am here to") == "It hurts."
    assert whole_sentences("no end at all") == ""
