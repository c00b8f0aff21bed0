"""DPO with LoRA on the night's preference pairs: the split, a resumable run, and the GGUF adapter it ends in.

Training starts from the version the persona runs with (its LoRA, or a fresh one on the base model) and uses
that version as DPO's reference, so each night moves the persona a measured step from where it woke up.
A run is keyed by what it trains on; a killed run finds its checkpoints under the same key and resumes.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from council.core.datafiles import read_jsonl
from council.core.errors import ModelError
from council.core.extras import require
from council.core.settings import TrainSettings
from council.core.training import TrainingFigures
from sleep.adapter import write_gguf_adapter

Progress = Callable[[str, int, int], None]  # (what, done, total)
_COLUMNS = ("prompt", "chosen", "rejected")


class TrainingData(BaseModel):
    """Which pairs train, which are replayed, and which are held out for the gate."""

    train: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    new: list[str] = Field(description="ids of pairs no earlier version trained on")
    replay: list[str] = Field(description="ids of earlier pairs mixed back in")
    waiting: int = Field(0, description="new pairs left for a later night by ``train.max_pairs``")
    dataset_hash: str


class DatasetRow(BaseModel):
    """A row of a preference dataset, in TRL's conversational or standard format (other columns are ignored)."""

    id: str | None = None
    prompt: str | list[dict[str, str]]
    chosen: str | list[dict[str, str]]
    rejected: str | list[dict[str, str]]
    source: str = Field("", description="what made the pair (revision, ranking, let_go, marker...)")
    margin: float = Field(1.0, description="how clearly the council preferred the chosen side")


def row_id(row: dict[str, Any]) -> str:
    """A pair's id: the exported ``id``, else a hash of its texts."""
    if row.get("id"):
        return str(row["id"])
    return hashlib.sha1(json.dumps([row[c] for c in _COLUMNS], sort_keys=True).encode()).hexdigest()[:24]


def read_pairs(dataset_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``DATASET_DIR/pairs.jsonl`` (as written by `council sleep`), each with an ``id``; none if empty."""
    path = dataset_dir / "pairs.jsonl" if dataset_dir.is_dir() else dataset_dir
    rows = [r.model_dump() for r in read_jsonl(path, DatasetRow, "preference", empty_ok=True)]
    return [r | {"id": row_id(r)} for r in rows]


def split(
    rows: list[dict[str, Any]], trained: set[str], settings: TrainSettings, tried: frozenset[str] = frozenset()
) -> TrainingData:
    """Split the pairs: a stable held-out share, the new ones, and a replayed share of earlier ones.

    The held-out share is chosen by id, so a pair never moves between training and evaluation across nights,
    and a pair the persona has already learnt is never held out. At most ``train.max_pairs`` train, replay
    included; the new ones left over are not lost: no version trained on them, so a later night takes them,
    after the ones no version has ``tried`` (a refused night's pairs), so a refused night is not repeated.
    """
    rows = list({r["id"]: r for r in rows}.values())  # a pair given twice is one pair
    held = {r["id"] for r in rows if _bucket(r["id"]) < settings.holdout and r["id"] not in trained}
    heldout = [r for r in rows if r["id"] in held]
    rest = [r for r in rows if r["id"] not in held]
    fresh = [r for r in rest if r["id"] not in trained]
    new = by_kind(fresh, math.ceil(settings.max_pairs / (1 + settings.replay)), tried)
    earlier = [r for r in rest if r["id"] in trained]
    wanted = min(len(earlier), round(settings.replay * len(new)), settings.max_pairs - len(new))
    replay = random.Random(settings.seed).sample(earlier, wanted)
    digest = hashlib.sha256("\n".join(sorted(r["id"] for r in rows)).encode()).hexdigest()
    return TrainingData(
        train=new + replay,
        heldout=heldout,
        new=[r["id"] for r in new],
        replay=[r["id"] for r in replay],
        waiting=len(fresh) - len(new),
        dataset_hash=digest,
    )


def by_kind(rows: list[dict[str, Any]], limit: int, tried: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """At most ``limit`` of ``rows``, in their order: each kind of pair in turn, its widest margins first.

    Every kind gets an equal share (a kind with fewer pairs keeps them all and leaves the rest to the others),
    so a large day's plentiful ranking and marker pairs do not drown its let-go and revision pairs. Pairs in
    ``tried`` come after all others of their kind.
    """
    if len(rows) <= limit:
        return rows
    kinds: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: (r["id"] in tried, -r.get("margin", 1.0), r["id"])):
        kinds.setdefault(r.get("source", ""), []).append(r)
    queues = [kinds[k] for k in sorted(kinds)]
    kept: set[str] = set()
    while len(kept) < limit and any(queues):
        for queue in queues:
            if queue and len(kept) < limit:
                kept.add(queue.pop(0)["id"])
    return [r for r in rows if r["id"] in kept]


def _bucket(pair_id: str) -> float:
    return int(hashlib.sha1(pair_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


_TRAINING_FIELDS = {
    "beta",
    "sft_weight",
    "marker_epochs",
    "marker_probability",
    "marker_anchor",
    "lora_r",
    "lora_alpha",
    "target_modules",
    "learning_rate",
    "epochs",
    "batch_size",
}


def run_key(data: TrainingData, settings: TrainSettings, base_hash: str, parent: str) -> str:
    """What identifies a run (pairs, training settings, base, parent): same key, same run, so a killed one resumes."""
    knobs = settings.model_dump(mode="json", include=_TRAINING_FIELDS | {"max_length", "seed"})
    what = json.dumps([sorted(data.new), sorted(data.replay), knobs, base_hash, parent])
    return hashlib.sha256(what.encode()).hexdigest()[:16]


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run; incomplete ones (killed while saving) are removed."""
    found = [p for p in run_dir.glob("checkpoint-*") if p.name.removeprefix("checkpoint-").isdigit()]
    for checkpoint in sorted(found, key=lambda p: int(p.name.removeprefix("checkpoint-")), reverse=True):
        if (checkpoint / "trainer_state.json").is_file():
            return checkpoint
        shutil.rmtree(checkpoint, ignore_errors=True)
    return None


def train_adapter(
    base_dir: Path,
    parent_peft: Path | None,
    data: TrainingData,
    settings: TrainSettings,
    run_dir: Path,
    out_dir: Path,
    progress: Progress | None = None,
    *,
    marker: str,
) -> TrainingFigures:
    """Train, then write ``out_dir/peft`` (peft's format) and ``out_dir/adapter.gguf`` (llama.cpp's).

    First (unless resuming a run that has passed it) the marker's own tokens are taught where the chosen texts
    pause at ``marker`` (``teach_marker``), then DPO runs.
    """
    require("train")
    import torch

    torch.manual_seed(settings.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    resumed = last_checkpoint(run_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices of the training stack, not the user's concern
        trainer = _trainer(base_dir, parent_peft, data, settings, run_dir, device, progress)
        taught = not resumed and settings.marker_epochs > 0  # a resumed run has passed the marker stage
        places = marker_places(data.train, marker, trainer.processing_class) if taught else []
        try:
            marker_loss = teach_marker(trainer.model, trainer.processing_class, places, settings)
            trainer.train(resume_from_checkpoint=str(resumed) if resumed else None)
        except torch.OutOfMemoryError as exc:
            raise ModelError("training ran out of memory", "lower train.batch_size or train.max_length") from exc
        _export(trainer.model, out_dir)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    last = logs[-1] if logs else {}
    return TrainingFigures(
        steps=trainer.state.global_step,
        epochs=settings.epochs,
        pairs=len(data.train),
        new_pairs=len(data.new),
        replayed_pairs=len(data.replay),
        waiting_pairs=data.waiting,
        heldout_pairs=len(data.heldout),
        train_loss=round(float(sum(e["loss"] for e in logs) / max(len(logs), 1)), 4),
        last_loss=round(float(last.get("loss", float("nan"))), 4),
        reward_accuracy=round(float(last.get("rewards/accuracies", float("nan"))), 4),
        reward_margin=round(float(last.get("rewards/margins", float("nan"))), 4),
        marker_places=len(places),
        marker_loss=marker_loss,
        resumed_from=resumed.name if resumed else None,
        seconds=round(time.perf_counter() - start, 1),
        device=device,
        settings=settings.model_dump(mode="json"),
    )


def marker_places(rows: list[dict[str, Any]], marker: str, tokenizer: Any) -> list[tuple[list[int], list[int]]]:  # noqa: ANN401
    """Each place a chosen text pauses at ``marker``: the tokens before it, and the marker's tokens as written there.

    The marker goes after a space (``marked``), so its tokens begin with that space; places whose tokens do not
    split there are left out.
    """
    places = []
    for row in rows:
        head, text = row["prompt"], row["chosen"]
        if isinstance(head, list):
            head = tokenizer.apply_chat_template(head, add_generation_prompt=True, tokenize=False)
            text = text[-1]["content"]
        for found in re.finditer(re.escape(marker), text):
            cut = len(text[: found.start()].rstrip(" "))
            ids = tokenizer(head + text[:cut], add_special_tokens=False)["input_ids"]
            whole = tokenizer(head + text[: found.end()], add_special_tokens=False)["input_ids"]
            if whole[: len(ids)] == ids and len(whole) > len(ids):
                places.append((ids, whole[len(ids) :]))
    return places


Passage = tuple[list[int], list[tuple[int, int]]]  # a chosen text's tokens, and each marker's [start, end) in them


def marker_passages(places: list[tuple[list[int], list[int]]], max_length: int) -> list[Passage]:
    """The places of one text as one passage: a place whose tokens begin with the last passage reads on from it.

    A causal model predicts each token from the tokens before it alone, so one pass over a chosen text gives the
    marker at each of its pauses what a pass per pause would, at a fraction of the cost (a text pauses about
    seven times). A passage longer than ``max_length`` loses its start, and the markers that went with it.
    """
    passages: list[Passage] = []
    for ids, mark in places:
        whole, span = ids + mark, (len(ids), len(ids) + len(mark))
        if passages and whole[: len(passages[-1][0])] == passages[-1][0]:
            passages[-1] = (whole, [*passages[-1][1], span])
        else:
            passages.append((whole, [span]))
    out = []
    for tokens, spans in passages:
        cut = max(len(tokens) - max_length, 0)
        kept = [(a - cut, b - cut) for a, b in spans if a - cut >= 1]  # a marker needs a token before it
        if kept:
            out.append((tokens[cut:], kept))
    return out


def teach_marker(
    model: Any,  # noqa: ANN401 - a peft model
    tokenizer: Any,  # noqa: ANN401
    places: list[tuple[list[int], list[int]]],
    settings: TrainSettings,
) -> float | None:
    """``settings.marker_epochs`` supervised passes on the marker's tokens at ``places``; the last pass's mean loss.

    DPO cancels what both sides of a pair share, so a marker on both sides teaches nothing, and a supervised
    term on whole chosen texts spreads over every token; here the loss is the marker's alone. Its first token,
    the choice to pause, is taught only up to ``settings.marker_probability``: above it the text the persona
    would have written next loses too much (perplexity on answers without markers), so the persona learns to
    pause about as often as that where its council reflected. The marker's other tokens are taught fully (once
    begun, the marker is written whole). The loss on the marker alone still moved everything else (one night's
    170 places: perplexity on answers people wrote 1.18x the base's), so the text around the markers is held to
    the base model by its KL, weighted ``settings.marker_anchor``. Each step reads one chosen text and every
    pause in it (``marker_passages``).
    """
    import torch

    passages = marker_passages(places, settings.max_length)
    if not passages or settings.marker_epochs <= 0:
        return None
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    device = next(model.parameters()).device
    floor = -math.log(settings.marker_probability)
    rng, losses = random.Random(settings.seed), list[float]()
    model.train()
    for epoch in range(math.ceil(settings.marker_epochs)):
        order = rng.sample(passages, len(passages))
        share = min(settings.marker_epochs - epoch, 1.0)  # a fractional last pass takes a share of the texts
        losses = []
        for passage in order[: round(len(order) * share)]:
            ids, mask, marker, opening = (t.to(device) for t in marker_batch([passage], tokenizer.pad_token_id or 0))
            logp = model(input_ids=ids, attention_mask=mask).logits[:, :-1].log_softmax(-1)
            nll = -logp.gather(-1, ids[:, 1:, None])[..., 0]  # each token's NLL given what came before it
            pause = torch.clamp(nll, min=floor) * opening + nll * (marker - opening)
            taught = pause.sum() / marker.sum()
            loss = taught
            if settings.marker_anchor > 0:
                loss = loss + settings.marker_anchor * _drift(model, ids, mask, logp, mask[:, 1:] - marker)
            loss.backward()
            optimiser.step()
            optimiser.zero_grad()
            losses.append(taught.item())
    return round(sum(losses) / len(losses), 4) if losses else None


def _drift(model: Any, ids: Any, mask: Any, logp: Any, where: Any) -> Any:  # noqa: ANN401 - torch
    """Mean KL from the base model (the adapter off) to ``logp``, over the positions ``where`` is 1."""
    import torch

    with torch.no_grad(), model.disable_adapter():
        base = model(input_ids=ids, attention_mask=mask).logits[:, :-1].log_softmax(-1)
    return ((base.exp() * (base - logp)).sum(-1) * where).sum() / where.sum().clamp(min=1)


def marker_batch(batch: list[Passage], pad: int) -> tuple[Any, Any, Any, Any]:
    """Right-padded ids and attention mask; over the predicted positions (``ids[:, 1:]``), the markers and starts.

    Token t is predicted at position t - 1, so each span's marks sit one to the left of its tokens.
    """
    import torch

    width = max(len(tokens) for tokens, _ in batch)
    ids = torch.full((len(batch), width), pad)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    marker = torch.zeros((len(batch), width - 1))
    opening = torch.zeros((len(batch), width - 1))
    for i, (tokens, spans) in enumerate(batch):
        ids[i, : len(tokens)] = torch.tensor(tokens)
        mask[i, : len(tokens)] = 1
        for a, b in spans:
            marker[i, a - 1 : b - 1] = 1
            opening[i, a - 1] = 1
    return ids, mask, marker, opening


def _trainer(
    base_dir: Path,
    parent_peft: Path | None,
    data: TrainingData,
    settings: TrainSettings,
    run_dir: Path,
    device: str,
    progress: Progress | None,
) -> Any:  # noqa: ANN401 - trl.DPOTrainer, imported only when training
    """TRL's DPO trainer on the base model, continuing the parent's LoRA (or a fresh one)."""
    import datasets
    import torch
    import transformers
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = base if parent_peft is None else PeftModel.from_pretrained(base, parent_peft, is_trainable=True)
    peft_config = None
    if parent_peft is None:
        peft_config = LoraConfig(
            r=settings.lora_r,
            lora_alpha=settings.lora_alpha,  # type: ignore[arg-type]  # peft scales by any number
            lora_dropout=0.0,
            target_modules=list[str](settings.target_modules),
            task_type="CAUSAL_LM",
        )
    args = _dpo_args(settings, run_dir, device)

    class _Progress(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:  # noqa: ANN401
            if progress:
                progress("training", state.global_step, state.max_steps)

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    dataset = datasets.Dataset.from_list([{c: r[c] for c in _COLUMNS} for r in data.train])
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_Progress()],
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def _dpo_args(settings: TrainSettings, run_dir: Path, device: str) -> Any:  # noqa: ANN401 - trl.DPOConfig
    """TRL's ``DPOConfig`` for ``settings``: checkpoints in ``run_dir`` so a killed run resumes."""
    from trl import DPOConfig

    losses = {"sigmoid": 1.0, "sft": settings.sft_weight}  # DPO's, and the chosen texts' NLL (RPO's form)
    losses = {name: weight for name, weight in losses.items() if weight > 0}
    return DPOConfig(
        output_dir=str(run_dir),
        beta=settings.beta,
        loss_type=list(losses),
        loss_weights=list(losses.values()),
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        max_length=settings.max_length,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=2,
        logging_steps=1,
        report_to=[],
        seed=settings.seed,
        use_cpu=device == "cpu",
        disable_tqdm=True,
    )


def _export(trained: Any, out_dir: Path) -> None:  # noqa: ANN401 - a peft model
    """Write the trained LoRA as ``out_dir/peft`` (to continue from) and ``out_dir/adapter.gguf`` (to run)."""
    from peft import get_peft_model_state_dict

    shutil.rmtree(out_dir / "peft", ignore_errors=True)
    trained.save_pretrained(out_dir / "peft", selected_adapters=["default"])
    state = {k: v.detach().float().cpu().numpy() for k, v in get_peft_model_state_dict(trained).items()}
    config = trained.peft_config["default"]
    write_gguf_adapter(
        out_dir / "adapter.gguf",
        state,
        alpha=float(config.lora_alpha),
        n_head=trained.config.num_attention_heads,
        n_head_kv=trained.config.num_key_value_heads,
    )
