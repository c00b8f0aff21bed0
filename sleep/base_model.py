"""The persona's GGUF as a plain transformers checkpoint, made once and cached by the GGUF's hash.

transformers reads a GGUF and de-quantizes it, but its trainer refuses a model still flagged as
GGUF-quantized, so the de-quantized weights are saved once as an ordinary checkpoint and loaded from there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from archetypes.backends.modelfiles import file_hash
from council.core.errors import ModelError


def base_checkpoint(gguf: Path, cache_dir: Path) -> Path:
    """Return a directory holding ``gguf`` as a plain transformers checkpoint and tokenizer, making it once."""
    digest = file_hash(gguf)
    target = cache_dir / digest[:16]
    if (target / "council-base.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except (ValueError, OSError, KeyError) as exc:
        raise ModelError(
            f"transformers could not read {gguf} ({exc})", "training needs a llama-family GGUF transformers supports"
        ) from exc
    config = loaded.config
    config.quantization_config = None
    del config.quantization_config
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "council-base.json").write_text(json.dumps({"gguf": str(gguf), "sha256": digest}))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target
