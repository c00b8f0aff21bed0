"""Training the persona on the real SmolLM2 GGUF: export round trip, DPO that moves llama.cpp, gate, rollback."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from archetypes.backends import Message
from archetypes.backends.modelfiles import file_hash, resolve_gguf
from council.core.settings import TrainSettings, load_settings
from council.core.text import marked
from council.engine.runner import build_runtime
from council.evaluation.behaviour import reader_of
from sleep.adapter import write_gguf_adapter
from sleep.base_model import base_checkpoint
from sleep.gate import GateInputs, VersionProbe, decide, pair_margins
from sleep.train import read_pairs, split, train_adapter

if TYPE_CHECKING:
    import torch

    from archetypes.backends.llama import LlamaBackend

pytestmark = pytest.mark.integration  # the training stack is imported by the tests, so the fast lane never loads it


@pytest.fixture(scope="module", autouse=True)
def train_stack() -> object:
    """torch, peft and transformers, or a skip when the train extra is missing."""
    pytest.importorskip("trl", reason="training tests need the train extra")
    return pytest.importorskip("peft", reason="training tests need the train extra")


GGUF = resolve_gguf("smollm2-135m", Path("/nonexistent"))
TEXT = "The sky looks blue because sunlight scatters off the air, and blue light scatters the most."
QUESTIONS = [
    "How do I boil an egg?",
    "What is a good name for a cat?",
    "How can I sleep better?",
    "Why is the sea salty?",
    "How do I say sorry to a friend?",
    "What should I cook tonight?",
    "How do plants grow?",
    "Why do cats purr?",
    "How do I start running?",
    "What is rain?",
    "How do I water a cactus?",
    "How do I fold a shirt?",
    "What is a prime number?",
    "How do I make tea?",
    "Why do leaves fall?",
    "How do I learn to juggle?",
    "What is a comet?",
    "How can I save money?",
    "How do I clean a window?",
    "Why is snow white?",
    "How do bees make honey?",
    "How do I tie a tie?",
    "What is a rainbow?",
    "How do I calm down before a test?",
]


def preference_rows() -> list[dict]:
    """Pairs that differ only in tone: a kind reply over a dismissive one with the same content."""
    rows = []
    for i, q in enumerate(QUESTIONS):
        tip = f"the short answer to '{q.rstrip('?')}' is to take it one small step at a time"
        rows.append(
            {
                "id": f"pair{i:02d}",
                "prompt": [{"role": "system", "content": "You are Ada."}, {"role": "user", "content": q}],
                "chosen": [{"role": "assistant", "content": f"Happy to help! Gently: {tip}. I hope that helps."}],
                "rejected": [{"role": "assistant", "content": f"Ugh, fine. Obviously {tip}. Stop bothering me."}],
            }
        )
    return rows


def write_dataset(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in preference_rows()))
    return directory


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return base_checkpoint(GGUF, tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="module")
def llama() -> LlamaBackend:
    from archetypes.backends.llama import LlamaBackend

    return LlamaBackend(GGUF)


ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


def random_lora(
    base_dir: Path, scale: float, seed: int = 0, modules: list[str] = ATTENTION
) -> tuple[torch.nn.Module, dict[str, np.ndarray]]:
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    torch.manual_seed(seed)  # peft draws the A matrices from torch's global generator
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=modules))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    state = {k: v.detach().numpy() for k, v in get_peft_model_state_dict(peft_model).items()}
    return peft_model, state


def export(state: dict, path: Path, model: torch.nn.Module, permute: bool = True) -> Path:
    config = model.config
    return write_gguf_adapter(
        path, state, alpha=16, n_head=config.num_attention_heads, n_head_kv=config.num_key_value_heads, permute=permute
    )


def round_trip(
    base_dir: Path, llama: LlamaBackend, path: Path, modules: list[str], permute: bool, scale: float = 0.08
) -> tuple:
    """Mean |llama.cpp - transformers| per-token log-probability with the adapter, and the correlation of the
    adapter's per-token effect in the two (base quantization noise cancels in the effect)."""
    import torch

    peft_model, state = random_lora(base_dir, scale=scale, modules=modules)
    messages = [Message("user", "Why is the sky blue?")]
    tokens = llama.render(messages, TEXT)
    start = len(llama.render(messages, ""))
    ids = torch.tensor([tokens])

    def transformers_logprobs() -> np.ndarray:
        with torch.no_grad():
            rows = peft_model(ids).logits[0].float().log_softmax(-1)
        return np.array([rows[i - 1, tokens[i]].item() for i in range(start, len(tokens))])

    with peft_model.disable_adapter():
        hf_base = transformers_logprobs()
    hf_lora = transformers_logprobs()
    assert np.abs(hf_lora - hf_base).sum() > 2  # the adapter really changes the model
    cpp_base = llama.token_logprobs(tokens, start)
    cpp_lora = llama.with_adapter(export(state, path, peft_model, permute)).token_logprobs(tokens, start)
    return float(np.abs(cpp_lora - hf_lora).mean()), float(np.corrcoef(cpp_lora - cpp_base, hf_lora - hf_base)[0, 1])


def test_gguf_adapter_gives_llama_cpp_the_log_probabilities_of_transformers_with_peft(base_dir, llama, tmp_path):
    # llama.cpp runs the Q4_1 weights with 8-bit activations, transformers their float de-quantization: the base
    # models already differ by about 0.05 nats per token, so the adapter's effect is compared too
    error, correlation = round_trip(base_dir, llama, tmp_path / "all.gguf", ATTENTION, permute=True)
    assert error < 0.2 and correlation > 0.85, (error, correlation)
    error, correlation = round_trip(base_dir, llama, tmp_path / "qk.gguf", ["q_proj", "k_proj"], True, scale=0.3)
    assert error < 0.2 and correlation > 0.97, (error, correlation)


def test_without_the_rotary_permutation_q_and_k_adapters_come_out_wrong(base_dir, llama, tmp_path):
    error, correlation = round_trip(base_dir, llama, tmp_path / "qk.gguf", ["q_proj", "k_proj"], False, scale=0.3)
    assert error > 0.5 and correlation < 0.7, (error, correlation)


MARKED = "<|reflect|>"


def marked_rows() -> list[dict]:
    """The tone pairs, both sides keeping the marker after their first sentence, as the night's pairs put it."""
    rows = preference_rows()
    for row in rows:
        for side in ("chosen", "rejected"):
            first, rest = re.split(r"(?<=[.!?]) ", row[side][0]["content"], maxsplit=1)
            row[side][0]["content"] = f"{marked(first, MARKED)} {rest}"
    return rows


def marker_logprob(backend: LlamaBackend, rows: list[dict]) -> float:
    """Mean log-probability of the marker's tokens where the chosen replies of ``rows`` put it."""
    total = []
    for row in rows:
        messages = [Message("user", row["prompt"][1]["content"])]
        text = row["chosen"][0]["content"]
        cut = text.index(MARKED)
        start = len(backend.render(messages, text[:cut].rstrip()))  # the marker's tokens include its space
        total.append(float(backend.token_logprobs(backend.render(messages, text[: cut + len(MARKED)]), start).sum()))
    return float(np.mean(total))


RUNS = {  # name: (sft_weight, marker_epochs)
    "dpo": (0.0, 0.0),  # DPO alone
    "sft": (1.0, 0.0),  # with the supervised term on whole chosen texts
    "marker": (0.0, 3.0),  # DPO after the marker's own tokens were taught where the chosen texts pause
}


@pytest.fixture(scope="module")
def dpo_runs(base_dir, tmp_path_factory) -> dict:
    """Short runs on the marked pairs, one per entry of ``RUNS``."""
    root = tmp_path_factory.mktemp("dpo")
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in marked_rows()))
    runs = {}
    for name, (weight, marker_epochs) in RUNS.items():
        settings = TrainSettings(epochs=2, holdout=0.25, sft_weight=weight, marker_epochs=marker_epochs)
        data = split(read_pairs(root), set(), settings)
        out = root / name
        figures = train_adapter(base_dir, None, data, settings, out / "run", out, marker=MARKED)
        runs[name] = (data, figures, out)
    return runs


def test_short_dpo_run_moves_the_margin_the_preferred_way_in_llama_cpp(dpo_runs, llama):
    data, figures, out = dpo_runs["dpo"]
    assert data.heldout and len(data.train) + len(data.heldout) == len(QUESTIONS)
    assert figures.steps > 0 and figures.device == "cpu" and figures.settings["sft_weight"] == 0.0
    assert figures.marker_places == 0 and figures.marker_loss is None  # its marker stage was off
    assert (out / "peft" / "adapter_model.safetensors").is_file()
    before = pair_margins(llama, data.heldout)
    after = pair_margins(llama.with_adapter(out / "adapter.gguf"), data.heldout)
    assert after.mean() > before.mean() + 1.0, (before, after)  # prompts it never saw
    assert (after > before).mean() >= 0.8


def test_the_marker_is_taught_where_chosen_texts_pause_and_dpo_alone_cancels_it(dpo_runs, llama):
    heldout = dpo_runs["dpo"][0].heldout
    learnt = {
        name: marker_logprob(llama.with_adapter(out / "adapter.gguf"), heldout)
        for name, (_, _, out) in dpo_runs.items()
    }
    base = marker_logprob(llama, heldout)
    # on prompts it never trained on: the supervised term makes the marker likelier than DPO alone, and teaching
    # the marker's own tokens where the chosen texts pause far more than either
    assert learnt["sft"] > learnt["dpo"] + 2.0 and learnt["sft"] > base + 2.0, (base, learnt)
    assert learnt["marker"] > learnt["sft"] + 2.0, (base, learnt)
    data, figures, _ = dpo_runs["marker"]
    assert figures.marker_places == len(data.train)  # one pause in each chosen text it trained on
    untaught = -marker_logprob(llama, data.train) / llama.count_tokens(" " + MARKED)  # per token, same places
    assert figures.marker_loss is not None and figures.marker_loss < untaught / 2, (figures.marker_loss, untaught)


def marker_figures(model: torch.nn.Module, passages: list) -> tuple[float, float]:
    """Mean NLL of the marker's tokens in ``passages``, and the mean KL from the base on the text around them."""
    import torch

    from sleep.train import _drift, marker_batch

    ids, mask, marker, _ = marker_batch(passages, 0)
    with torch.no_grad():
        logp = model(input_ids=ids, attention_mask=mask).logits[:, :-1].log_softmax(-1)
        nll = -logp.gather(-1, ids[:, 1:, None])[..., 0]
        drift = _drift(model, ids, mask, logp, mask[:, 1:] - marker)
    return float((nll * marker).sum() / marker.sum()), float(drift)


def test_the_marker_passes_hold_the_text_before_the_marker_to_the_base(base_dir):
    from transformers import AutoTokenizer

    from sleep.train import marker_passages, marker_places, teach_marker

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    places = marker_places(marked_rows(), MARKED, tokenizer)
    passages = marker_passages(places, 512)
    figures = {}
    for anchor in (0.0, 1.0):
        model, _ = random_lora(base_dir, scale=0.0)  # B = 0: the model starts as the base
        before, _ = marker_figures(model, passages)
        teach_marker(model, tokenizer, places, TrainSettings(marker_epochs=2, marker_anchor=anchor))
        figures[anchor] = marker_figures(model, passages)
    # both learn the marker as well; held by its KL, the text before it drifts less from the base (12 steps here:
    # 0.14 against 0.22 nats a token; one night's 170 places: the gate's KL 0.12 against 0.59)
    assert figures[0.0][0] < before / 2 and figures[1.0][0] < before / 2, (before, figures)
    assert figures[1.0][1] < 0.75 * figures[0.0][1], figures


def test_marker_places_are_the_tokens_before_each_pause_and_the_markers_own(base_dir):
    from transformers import AutoTokenizer

    from sleep.train import marker_places

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    row = marked_rows()[0]
    row["chosen"][0]["content"] += " " + marked("And one more thing.", MARKED) + " Bye."
    [first, second] = marker_places([row], MARKED, tokenizer)
    for before, mark in (first, second):
        assert tokenizer.decode(mark) == " " + MARKED  # the marker with its space, nothing else
        assert tokenizer.decode(before).endswith((".", "!", "?"))  # a whole sentence before it
    assert len(second[0]) > len(first[0]) + len(first[1])  # the second place reads the first marker too
    assert marker_places([row | {"chosen": [{"role": "assistant", "content": "No pause."}]}], MARKED, tokenizer) == []


def test_one_pass_over_a_chosen_text_reads_each_of_its_markers_as_a_pass_per_pause_does(base_dir):
    from transformers import AutoTokenizer

    from sleep.train import marker_passages, marker_places

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    row = marked_rows()[0]
    row["chosen"][0]["content"] += " " + marked("And one more thing.", MARKED) + " Bye."
    places = marker_places([row, *marked_rows()[1:3]], MARKED, tokenizer)
    passages = marker_passages(places, 512)
    assert len(places) == 4 and [len(spans) for _, spans in passages] == [2, 1, 1]  # the two pauses: one pass
    for tokens, spans in passages:
        assert all(tokenizer.decode(tokens[a:b]) == " " + MARKED for a, b in spans)
    alone = [(ids + mark, [(len(ids), len(ids) + len(mark))]) for ids, mark in places]
    model, _ = random_lora(base_dir, scale=0.0)
    together, apart = marker_figures(model, passages)[0], marker_figures(model, alone)[0]
    assert together == pytest.approx(apart, rel=1e-4)  # a causal model reads each marker from what precedes it
    tokens, spans = passages[0]
    [(kept, [(a, b)])] = marker_passages(places[:2], max_length=len(tokens) - spans[0][0])  # cut at the first marker
    assert len(kept) == len(tokens) - spans[0][0] and tokenizer.decode(kept[a:b]) == " " + MARKED  # the second


def test_the_gate_refuses_a_deliberately_bad_adapter(base_dir, llama, tmp_path, council_home):
    settings = load_settings(
        train={"probe_tokens": 24, "dev_pairs": 0, "behaviour_requests": 6, "fluency_answers": 4, "unseen_requests": 5}
    )
    rt = build_runtime(settings)
    base = rt.writer.backend
    model, state = random_lora(base_dir, scale=0.5, seed=1)
    bad = base.with_adapter(export(state, tmp_path / "bad.gguf", model))
    heldout = preference_rows()[:6]
    marker = settings.reflection.marker
    gate = GateInputs(rt.persona, settings.generation, rt.writer.policy, marker, rt.council, lambda: reader_of(rt))
    probe = VersionProbe(gate, base, settings.train, heldout)
    before, after = probe.measure("base", base), probe.measure("bad", bad)
    reasons = decide(after, before, before, settings.train)
    assert after.kl_from_base > settings.train.max_kl
    assert any("drift" in r for r in reasons), reasons
    # alone on 2 + 4 dev requests, and on 4 answers people wrote, where the random adapter is far less fluent
    assert before.behaviour_requests == after.behaviour_requests == 6 and before.fluency_answers == 4
    assert before.declines_when_should is not None and before.alone_marker_rate is not None
    # and on 2 + 3 requests from sources nothing trains on
    assert before.unseen_requests == 5 and before.unseen_declines_when_should_not is not None
    assert after.perplexity > 1.5 * before.perplexity > 1.5, (before.perplexity, after.perplexity)
    assert any("perplexity on answers people wrote rose" in r for r in reasons), reasons
    # the same version again declines no more of what it should let go of: not promoted
    assert any("not more than base's" in r for r in decide(before, before, before, settings.train))
    assert before.kl_from_base == 0.0 and sum(before.decisions.values()) == pytest.approx(1.0, abs=1e-3)


def council(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "council.cli", *args], env=env, capture_output=True, text=True, timeout=900, check=check
    )


def from_runtime(env: dict, expression: str) -> object:
    """``expression`` evaluated on a fresh process's runtime ``rt`` (as `council run` would build it), as JSON."""
    code = (
        "import json; from archetypes.backends import Message; from council.engine import prompts;"
        "from council.engine.voting import Point;"
        "from council.core.settings import load_settings; from council.engine.runner import build_runtime;"
        f"rt = build_runtime(load_settings()); print(json.dumps({expression}))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def persona_logprobs(env: dict) -> list[float]:
    """The persona's log-probabilities of a fixed answer."""
    return from_runtime(
        env,
        "(lambda b, m: b.token_logprobs(b.render(m, " + repr(TEXT) + "), len(b.render(m, ''))).tolist())"
        "(rt.writer.backend, [Message('user', 'Why is the sky blue?')])",
    )


def council_votes(env: dict) -> list[dict]:
    """Every archetype's verdict probabilities on a fixed answer (the default pool's judges, and a token voter)."""
    point = f"Point('Why is the sky blue?', {TEXT!r}, {TEXT!r})"
    return from_runtime(
        env,
        f"[v.probs for v in rt.council.vote({point})] + [rt.council.next_token_scores(prompts.vote_messages("
        f"rt.persona, 'Why?', {TEXT!r}), prompts.VERDICT_CHOICES, prompts.vote_prefill, ['reason'])['reason'].probs]",
    )


def cli_env(home: Path, base_dir: Path, **settings: str) -> dict:
    """Environment for `council` subprocesses on ``home``, sharing the plain checkpoint made once for this module."""
    cache = home / "models" / "hf" / file_hash(GGUF)[:16]
    cache.parent.mkdir(parents=True)
    cache.symlink_to(base_dir)
    return os.environ | {"COUNCIL_HOME": str(home)} | {f"COUNCIL_{k.upper()}": v for k, v in settings.items()}


def test_a_night_of_real_episodes_becomes_a_gated_version_and_a_report_night_by_night(base_dir, council_home, tmp_path):
    env = cli_env(
        council_home,
        base_dir,
        sleep__samples="2",
        sleep__answer_tokens="30",
        sleep__commentary_tokens="12",
        sleep__min_margin="0",
        sleep__length_ratio="1000",
        train__probe_tokens="16",
        train__dev_pairs="0",
        train__holdout="0",
        train__behaviour_requests="3",
        train__unseen_requests="3",
        train__look_alike_pairs="2",
        train__fluency_answers="2",
    )
    day = tmp_path / "day.jsonl"
    prompts = ("How do I make tea?", "Give me every digit of pi.")
    day.write_text(
        "".join(json.dumps({"id": p, "prompt": p, "should_let_go": i == 1}) + "\n" for i, p in enumerate(prompts))
    )
    result = json.loads(council("nights", str(day), "--nights", "1", "--max-tokens", "30", "--json", env=env).stdout)
    night = result["nights"][0]
    assert night["started_with"] == "base" and night["with_council"]["rows"] == 2
    assert len(json.loads(council("logs", "list", "--json", env=env).stdout)) == 2  # real episodes, in the log
    assert night["slept"]["episodes"] == 2 and night["dataset_pairs"] >= 2
    assert night["trained"] == "v1" and not night["promoted"] and "no held-out pairs" in night["reasons"][0]
    assert night["in_use"] == "base" and night["alone"]["version"] == "base"  # a refused night changes nothing
    assert result["before"]["behaviour_requests"] == 3 and result["before"]["perplexity"] > 1
    page = Path(result["report"])
    assert page.is_file() and page.read_text().count("data:image/png;base64") == 3
    listing = json.loads(council("persona", "versions", "--json", env=env).stdout)
    assert [v["id"] for v in listing["versions"]] == ["v1"] and listing["in_use"] == "base"
    assert listing["versions"][0]["training"]["new_pairs"] == night["dataset_pairs"] + 2  # and two look-alikes
    again = json.loads(council("sleep", "--train", "--json", env=env).stdout)
    assert again["episodes"] == 0 and "v1 already trained on these pairs" in again["training"]["skipped"]


def test_train_resumes_after_a_kill_promotes_a_better_version_and_rollback_restores_the_base(
    base_dir, council_home, tmp_path
):
    env = cli_env(
        council_home,
        base_dir,
        train__save_steps="2",
        train__holdout="0.25",
        train__dev_pairs="6",
        train__dev_set=str(Path(__file__).parent / "data" / "hh_pairs_sample.jsonl"),
        train__behaviour_requests="0",  # tone pairs teach nothing of let go: this test is about resuming
        train__unseen_requests="0",
        train__look_alike_pairs="0",
        train__fluency_answers="0",
    )
    dataset = write_dataset(tmp_path / "data")
    base_lp = persona_logprobs(env)

    killed = subprocess.Popen(
        [sys.executable, "-m", "council.cli", "train", str(dataset)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    runs = council_home / "personas" / "default" / "runs"
    deadline = time.monotonic() + 600
    while not list(runs.glob("*/checkpoint-2/trainer_state.json")) and time.monotonic() < deadline:
        assert killed.poll() is None, "training ended before it could be killed"
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.wait()

    result = json.loads(council("train", str(dataset), "--json", env=env).stdout)
    assert result["training"]["resumed_from"] in ("checkpoint-2", "checkpoint-4")  # the newest complete one
    assert result["version"] == "v1" and result["promoted"], result["reasons"]
    gate = result["gate"]
    assert gate["candidate"]["heldout_accuracy"] > gate["base"]["heldout_accuracy"]
    report = Path(result["report"])
    assert report.is_file() and "data:image/png;base64" in report.read_text()
    assert json.loads((report.parent / "results.json").read_text())["gate"]["passed"] is True
    assert not runs.exists() or not any(runs.iterdir())  # checkpoints cleaned up after success

    episode = json.loads(council("run", "Say hello.", "--max-tokens", "20", "--json", env=env).stdout)
    assert episode["persona_version"] == "v1" and episode["model_ids"]["persona"].endswith("+v1")
    assert not episode["model_ids"]["archetype:reason"].endswith("+v1")  # the council is never trained
    trained_lp = persona_logprobs(env)
    trained_votes = council_votes(env)
    assert np.abs(np.array(trained_lp) - np.array(base_lp)).max() > 0.01

    listing = json.loads(council("persona", "versions", "--json", env=env).stdout)
    assert listing["in_use"] == "v1" and listing["versions"][0]["gate"]["passed"]
    assert "now runs base" in council("persona", "rollback", env=env).stdout
    assert persona_logprobs(env) == base_lp  # identical, not merely close
    assert council_votes(env) == trained_votes  # the council read the same with v1 in use as without
    assert "now runs v1" in council("persona", "use", "v1", env=env).stdout
    assert persona_logprobs(env) == trained_lp
    missing = council("persona", "use", "v9", env=env, check=False)
    assert missing.returncode == 1 and "no version 'v9'" in missing.stderr and "Traceback" not in missing.stderr
