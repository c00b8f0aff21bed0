"""Write a peft LoRA as a llama.cpp GGUF adapter.

llama.cpp adds ``scale * alpha / r * B @ A`` to each base weight it finds by name (``blk.N.attn_q.weight`` +
``.lora_a``/``.lora_b``). Llama-family GGUFs store the q and k projections with their rows permuted for
rotary embeddings (``convert_hf_to_gguf.py``'s ``permute``); transformers undoes that when it reads a GGUF,
so a LoRA trained there needs the same permutation on the rows of its q and k B matrices, and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from council.core.errors import ModelError

_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_LORA = re.compile(r"(?:.*\.)?layers\.(\d+)\.([a-z_]+\.[a-z_]+)\.lora_([AB])(?:\.[a-z]+)?\.weight$")


def permute_rows(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's rotary row order for a q or k projection (or its LoRA B) with ``n_head`` heads."""
    rows = weights.shape[0]
    return weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def gguf_tensors(
    state: Mapping[str, np.ndarray], *, n_head: int, n_head_kv: int, permute: bool = True
) -> dict[str, np.ndarray]:
    """Map a peft state dict (``...layers.N.self_attn.q_proj.lora_A.weight``) to GGUF adapter tensors."""
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        match = _LORA.match(key)
        if match is None:
            if "lora_" in key:
                raise ModelError(f"LoRA weight {key} has no llama.cpp adapter name", f"target only {', '.join(_NAMES)}")
            continue
        layer, module, which = match.groups()
        if module not in _NAMES:
            raise ModelError(f"LoRA on {module} cannot be exported", f"target only {', '.join(_NAMES)}")
        data = np.ascontiguousarray(value, dtype=np.float32)
        if permute and which == "B" and module in ("self_attn.q_proj", "self_attn.k_proj"):
            data = permute_rows(data, n_head if module == "self_attn.q_proj" else n_head_kv)
        out[f"blk.{layer}.{_NAMES[module]}.weight.lora_{which.lower()}"] = np.ascontiguousarray(data)
    if not out:
        raise ModelError("the adapter holds no LoRA weights", "train with target modules such as q_proj, v_proj")
    return out


def write_gguf_adapter(
    path: Path,
    state: Mapping[str, np.ndarray],
    *,
    alpha: float,
    n_head: int,
    n_head_kv: int,
    architecture: str = "llama",
    permute: bool = True,
) -> Path:
    """Write ``state`` (peft LoRA weights as arrays) as a GGUF adapter llama.cpp loads with its scale = alpha / r."""
    import gguf

    tensors = gguf_tensors(state, n_head=n_head, n_head_kv=n_head_kv, permute=permute)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    writer = gguf.GGUFWriter(str(tmp), architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for name, data in sorted(tensors.items()):
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path
