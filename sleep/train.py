"""DPO with LoRA on the night's preference pairs: the split, a resumable run, and the GGUF adapter it ends in.

Training starts from the version the persona runs with (its LoRA, or a fresh one on the base model) and uses
that version as DPO's reference, so each night moves the persona a measured step from where it woke up.
A run is keyed by what it trains on; a killed run finds its checkpoints under the same key and resumes.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from council.config import TrainSettings
from council.errors import CouncilError, DefinitionError, ModelError
from sleep.adapter import write_gguf_adapter

Progress = Callable[[str, int, int], None]  # (what, done, total)
_COLUMNS = ("prompt", "chosen", "rejected")


class TrainingData(BaseModel):
    """Which pairs train, which are replayed, and which are held out for the gate."""

    train: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    new: list[str] = Field(description="ids of pairs no earlier version trained on")
    replay: list[str] = Field(description="ids of earlier pairs mixed back in")
    dataset_hash: str


def row_id(row: dict[str, Any]) -> str:
    """A pair's id: the exported ``id``, else a hash of its texts."""
    if row.get("id"):
        return str(row["id"])
    return hashlib.sha1(json.dumps([row[c] for c in _COLUMNS], sort_keys=True).encode()).hexdigest()[:24]


def read_pairs(dataset_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``DATASET_DIR/pairs.jsonl`` (as written by `council sleep`), each with an ``id``."""
    path = dataset_dir / "pairs.jsonl" if dataset_dir.is_dir() else dataset_dir
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DefinitionError(f"cannot read {path} ({exc.strerror})", "run `council sleep` first or give its --out DIR")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append({c: row[c] for c in _COLUMNS} | {"id": row_id(row)})
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DefinitionError(
                f"{path}:{number}: not a preference row ({exc})", "each line needs prompt, chosen and rejected"
            ) from exc
    return rows


def split(rows: list[dict[str, Any]], trained: set[str], settings: TrainSettings) -> TrainingData:
    """Split the pairs: a stable held-out share, the new ones, and a replayed share of earlier ones.

    The held-out share is chosen by id, so a pair never moves between training and evaluation across nights.
    """
    heldout = [r for r in rows if _bucket(r["id"]) < settings.holdout]
    rest = [r for r in rows if _bucket(r["id"]) >= settings.holdout]
    new = [r for r in rest if r["id"] not in trained]
    earlier = [r for r in rest if r["id"] in trained]
    replay = random.Random(settings.seed).sample(earlier, min(len(earlier), round(settings.replay * len(new))))
    digest = hashlib.sha256("\n".join(sorted(r["id"] for r in rows)).encode()).hexdigest()
    return TrainingData(
        train=new + replay,
        heldout=heldout,
        new=[r["id"] for r in new],
        replay=[r["id"] for r in replay],
        dataset_hash=digest,
    )


def _bucket(pair_id: str) -> float:
    return int(hashlib.sha1(pair_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def run_key(data: TrainingData, settings: TrainSettings, base_hash: str, parent: str) -> str:
    """What identifies a run: same key, same run, so a killed one resumes."""
    what = json.dumps([sorted(data.new), sorted(data.replay), settings.model_dump(mode="json"), base_hash, parent])
    return hashlib.sha256(what.encode()).hexdigest()[:16]


def train_adapter(
    base_dir: Path,
    parent_peft: Path | None,
    data: TrainingData,
    settings: TrainSettings,
    run_dir: Path,
    out_dir: Path,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train, then write ``out_dir/peft`` (peft's format) and ``out_dir/adapter.gguf`` (llama.cpp's).

    Returns the training figures: steps, loss, DPO reward accuracy and margin, seconds, device.
    """
    try:
        import datasets
        import torch
        import transformers
        from peft import LoraConfig, PeftModel, get_peft_model_state_dict
        from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
        from transformers.trainer_utils import get_last_checkpoint
        from trl import DPOConfig, DPOTrainer
    except ImportError as exc:
        raise CouncilError(f"training needs {exc.name}", "pip install 'archetype-council[train]'") from exc

    if not data.train:
        raise DefinitionError("no new preference pairs to train on", "run `council sleep` after a day of episodes")
    torch.manual_seed(settings.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft_config = None
    if parent_peft is not None:
        model = PeftModel.from_pretrained(model, parent_peft, is_trainable=True)
    else:
        peft_config = LoraConfig(
            r=settings.lora_r,
            lora_alpha=settings.lora_alpha,
            lora_dropout=0.0,
            target_modules=settings.target_modules,
            task_type="CAUSAL_LM",
        )
    args = DPOConfig(
        output_dir=str(run_dir),
        beta=settings.beta,
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
    start = time.perf_counter()
    resumed = get_last_checkpoint(str(run_dir)) if run_dir.is_dir() else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation notices of the training stack, not the user's concern
            result = trainer.train(resume_from_checkpoint=resumed)
    except torch.OutOfMemoryError as exc:
        raise ModelError("training ran out of memory", "lower train.batch_size or train.max_length") from exc
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    trained = trainer.model
    shutil.rmtree(out_dir / "peft", ignore_errors=True)
    trained.save_pretrained(out_dir / "peft", selected_adapters=["default"])
    state = {k: v.detach().float().cpu().numpy() for k, v in get_peft_model_state_dict(trained).items()}
    config = trained.peft_config["default"]
    write_gguf_adapter(
        out_dir / "adapter.gguf",
        state,
        alpha=float(config.lora_alpha),
        n_head=model.config.num_attention_heads,
        n_head_kv=model.config.num_key_value_heads,
    )
    last = logs[-1] if logs else {}
    return {
        "steps": trainer.state.global_step,
        "epochs": settings.epochs,
        "pairs": len(data.train),
        "new_pairs": len(data.new),
        "replayed_pairs": len(data.replay),
        "heldout_pairs": len(data.heldout),
        "train_loss": round(float(result.training_loss), 4),
        "last_loss": round(float(last.get("loss", float("nan"))), 4),
        "reward_accuracy": round(float(last.get("rewards/accuracies", float("nan"))), 4),
        "reward_margin": round(float(last.get("rewards/margins", float("nan"))), 4),
        "resumed_from": Path(resumed).name if resumed else None,
        "seconds": round(time.perf_counter() - start, 1),
        "device": device,
        "settings": settings.model_dump(mode="json"),
    }
