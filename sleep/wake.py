"""The end of the night: train a persona version on the pairs, gate it, store it, and report before and after."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel

from archetypes.backends import BackendPool
from archetypes.modelfiles import file_hash
from council.errors import ModelError
from council.graph import CouncilRuntime
from memory.versions import BASE, PersonaVersion, PersonaVersions
from sleep.base_model import base_checkpoint
from sleep.gate import GateResult, VersionProbe, decide, load_dev
from sleep.train import Progress, read_pairs, run_key, split, train_adapter
from sleep.train_report import write_report


class Wakeup(BaseModel):
    """What `council train` did: the new version, its gate, and where its report is."""

    version: PersonaVersion
    gate: GateResult
    report: str

    @property
    def in_use(self) -> str:
        """The version the persona runs with from now on."""
        return self.version.id if self.version.promoted else self.version.parent


def train_version(
    rt: CouncilRuntime, backends: BackendPool, dataset_dir: Path, progress: Progress | None = None
) -> Wakeup:
    """Train a new version of ``rt``'s persona on ``dataset_dir``, gate it against the one in use, store both."""
    settings = rt.settings.train
    persona = rt.persona
    versions = PersonaVersions(rt.log)
    base = backends.get(persona.model)
    gguf = getattr(base, "path", None)
    if gguf is None:
        raise ModelError(f"training needs a llama.cpp persona model, not {base.model_id}", "give the persona a GGUF")
    base_hash = file_hash(gguf)
    parent = versions.active(persona.name)
    data = split(read_pairs(dataset_dir), versions.trained_pairs(persona.name), settings)
    version_id, number = versions.next_id(persona.name)
    home = rt.settings.personas_dir / persona.name
    out_dir = home / version_id
    run_dir = home / "runs" / run_key(data, settings, base_hash, parent.id if parent else BASE)
    figures = train_adapter(
        base_checkpoint(gguf, rt.settings.models_dir / "hf"),
        Path(parent.adapter).parent / "peft" if parent else None,
        data,
        settings,
        run_dir,
        out_dir,
        progress,
    )
    candidate = backends.adapted(persona.model, out_dir / "adapter.gguf")
    probe = VersionProbe(rt, base, settings, data.heldout, load_dev(settings.dev_set, settings.dev_pairs))
    step = progress or (lambda what, done, total: None)
    step("measuring the version in use", 0, 3)
    previous = probe.measure(parent.id if parent else BASE, rt.writer.backend)
    step("measuring the base model", 1, 3)
    before = previous if parent is None else probe.measure(BASE, base)
    step(f"measuring {version_id}", 2, 3)
    after = probe.measure(version_id, candidate)
    reasons = decide(after, previous, settings)
    gate = GateResult(passed=not reasons, reasons=reasons, candidate=after, previous=previous, base=before)
    version = PersonaVersion(
        id=version_id,
        persona=persona.name,
        number=number,
        created_at=datetime.now(timezone.utc),
        parent=parent.id if parent else BASE,
        adapter=str(out_dir / "adapter.gguf"),
        dataset_hash=data.dataset_hash,
        base_hash=base_hash,
        pair_ids=data.new + data.replay,
        training=figures,
        gate=gate.model_dump(),
        promoted=gate.passed,
        reason="; ".join(reasons),
    )
    report = write_report(version, gate, out_dir / "report")
    versions.add(version)
    shutil.rmtree(run_dir, ignore_errors=True)
    return Wakeup(version=version, gate=gate, report=str(report))
