"""The end of the night: train a persona version on the pairs, gate it, store it, and report before and after."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from archetypes.backends import Backend, LoadedModels, LocalModel
from archetypes.backends.modelfiles import file_hash
from archetypes.definitions import Persona
from council.core.errors import DefinitionError, ModelError, NothingToTrainError
from council.core.extras import require
from council.core.locks import exclusive
from council.core.settings import TrainSettings
from council.core.training import GateResult
from council.engine.runtime import CouncilRuntime
from council.evaluation.behaviour import reader_of
from council.evaluation.evaluate import PairRow
from council.store.versions import BASE, PersonaVersion, PersonaVersions
from sleep.base_model import base_checkpoint
from sleep.gate import GateInputs, VersionProbe, decide, load_dev
from sleep.lookalikes import look_alike_pairs
from sleep.train import Progress, TrainingData, read_pairs, run_key, split, train_adapter


class TrainedVersion(BaseModel):
    """What `council train` did: the new version, its gate, where its report is, and the version now in use."""

    version: PersonaVersion
    gate: GateResult
    report: str
    in_use: str


@dataclass(frozen=True)
class TrainInputs:
    """What training a version, its gate and its report use: ``train_version`` unpacks them from the runtime."""

    gate: GateInputs  # the persona, how it writes and its council
    train: TrainSettings
    personas_dir: Path
    models_dir: Path
    backends: LoadedModels
    versions: PersonaVersions
    in_use: Backend  # the persona's model as it writes now: the version in use

    @property
    def persona(self) -> Persona:
        """The persona a version is trained of."""
        return self.gate.persona


def train_version(rt: CouncilRuntime, dataset_dir: Path, progress: Progress | None = None) -> TrainedVersion:
    """Train a new version of ``rt``'s persona on ``dataset_dir``, gate it against the one in use, store both.

    The one place training reads the runtime: it takes what it uses and hands it to ``train_persona``.
    """
    settings = rt.settings
    gate = GateInputs(
        persona=rt.persona,
        generation=settings.generation,
        policy=rt.writer.policy,
        marker=settings.reflection.marker,
        council=rt.council,
        reader=lambda: reader_of(rt),
    )
    inputs = TrainInputs(
        gate=gate,
        train=settings.train,
        personas_dir=settings.personas_dir,
        models_dir=settings.models_dir,
        backends=rt.backends or LoadedModels(settings),
        versions=PersonaVersions(rt.db, settings.personas_dir),
        in_use=rt.writer.backend,
    )
    return train_persona(inputs, dataset_dir, progress)


def train_persona(inputs: TrainInputs, dataset_dir: Path, progress: Progress | None = None) -> TrainedVersion:
    """Train a new version of the persona on ``dataset_dir``, gate it against the one in use, store both.

    Everything that can be refused (missing extra, no new pairs, a dataset the gate cannot score, a bad dev set,
    a parent without its weights) is refused before training starts.
    """
    settings, persona, versions = inputs.train, inputs.persona, inputs.versions
    pairs = read_pairs(dataset_dir)
    if not pairs:
        raise NothingToTrainError(
            f"{dataset_dir} has no preference pairs: the night had nothing to learn", "sleep on new episodes first"
        )
    base = inputs.backends.get(persona.model)
    if not isinstance(base, LocalModel):
        raise ModelError(f"training needs a llama.cpp persona model, not {base.model_id}", "give the persona a GGUF")
    require("train")  # after the cheap refusals: importing the training stack takes seconds
    gguf = base.path
    home = inputs.personas_dir / persona.name
    with exclusive(home / "train.lock", "another `council train`", "wait for it to finish"):
        plan = _plan(inputs, gguf, dataset_dir, pairs)
        parent, data, key, base_hash = plan.parent, plan.data, plan.key, plan.base_hash
        version_id, number = versions.next_id(persona.name)
        out_dir = home / version_id
        figures = train_adapter(
            base_checkpoint(gguf, inputs.models_dir / "hf"),
            plan.parent_peft,
            data,
            settings,
            home / "runs" / key,
            out_dir,
            progress,
            marker=inputs.gate.marker,
        ).model_copy(update={"run_key": key})
        gate = _gate(inputs, data.heldout, plan.dev, parent, version_id, out_dir / "adapter.gguf", progress)
        version = PersonaVersion(
            id=version_id,
            persona=persona.name,
            number=number,
            created_at=datetime.now(timezone.utc),
            parent=parent.id if parent else BASE,
            adapter=f"{persona.name}/{version_id}/adapter.gguf",
            dataset_hash=data.dataset_hash,
            base_hash=base_hash,
            pair_ids=data.new + data.replay,
            training=figures,
            gate=gate,
            promoted=gate.passed,
            reason="; ".join(gate.reasons),
        )
        versions.add(version)
        stored = versions.get(persona.name, version_id) or version
        from sleep.train_report import write_report  # plots: imported once the training stack is known to be there

        report = write_report(stored, figures, gate, out_dir / "report")
        shutil.rmtree(home / "runs", ignore_errors=True)
        return TrainedVersion(version=stored, gate=gate, report=str(report), in_use=versions.current(persona.name))


@dataclass
class _Plan:
    """What a training run will start from, checked before any training."""

    parent: PersonaVersion | None
    parent_peft: Path | None
    data: TrainingData
    dev: list[PairRow]
    base_hash: str
    key: str


def _plan(inputs: TrainInputs, gguf: Path, dataset_dir: Path, pairs: list[dict[str, Any]]) -> _Plan:
    """Split the pairs and refuse, in one line, anything training or the gate could not use."""
    settings, persona, versions = inputs.train, inputs.persona, inputs.versions
    parent = versions.active(persona.name)
    trained = versions.trained_pairs(persona.name)
    look_alikes = look_alike_pairs(persona, settings.look_alike_pairs, trained, inputs.gate.marker)
    tried = frozenset(i for v in versions.all(persona.name) for i in v.pair_ids)
    data = split(pairs + look_alikes, trained, settings, tried)
    if not set(data.new) - {r["id"] for r in look_alikes}:  # look-alikes go with a night's pairs, never alone
        raise NothingToTrainError(
            f"no new preference pairs in {dataset_dir} ({len(data.heldout)} held out)", "sleep on new episodes first"
        )
    if any(not isinstance(r["prompt"], list) for r in data.heldout):
        raise DefinitionError(
            "the gate scores conversational pairs only", "export with `council sleep --format conversational`"
        )
    dev = load_dev(settings.dev_set, settings.dev_pairs)
    parent_peft = parent.peft_dir(inputs.personas_dir) if parent else None
    if parent_peft is not None and not parent_peft.is_dir():
        raise ModelError(
            f"{parent_peft} is missing: training cannot continue from it", "run `council persona use base`"
        )
    base_hash = file_hash(gguf, inputs.models_dir)
    key = run_key(data, settings, base_hash, parent.id if parent else BASE)
    for earlier in versions.all(persona.name):
        if earlier.training is not None and earlier.training.run_key == key:
            raise NothingToTrainError(
                f"{earlier.id} already trained on these pairs from {earlier.parent}"
                + (f" (not promoted: {earlier.reason})" if not earlier.promoted else ""),
                "sleep on new episodes first",
            )
    return _Plan(parent, parent_peft, data, dev, base_hash, key)


def _gate(
    inputs: TrainInputs,
    heldout: list[dict[str, Any]],
    dev: list[PairRow],
    parent: PersonaVersion | None,
    version_id: str,
    adapter: Path,
    progress: Progress | None,
) -> GateResult:
    """Measure the version in use, the base and the candidate; decide."""
    step = progress or (lambda what, done, total: None)
    backends, persona = inputs.backends, inputs.persona
    base, current = backends.get(persona.model), inputs.in_use
    if not isinstance(base, LocalModel) or not isinstance(current, LocalModel):
        raise ModelError("the gate needs the persona on a llama.cpp model", "give the persona a GGUF")
    probe = VersionProbe(inputs.gate, base, inputs.train, heldout, dev)
    step("measuring the version in use", 0, 3)
    previous = probe.measure(parent.id if parent else BASE, current)
    step("measuring the base model", 1, 3)
    before = previous if parent is None else probe.measure(BASE, base)
    step(f"measuring {version_id}", 2, 3)
    after = probe.measure(version_id, backends.adapted(persona.model, adapter))
    reasons = decide(after, previous, before, inputs.train)
    return GateResult(passed=not reasons, reasons=reasons, candidate=after, previous=previous, base=before)
