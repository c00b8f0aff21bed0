"""llama.cpp backend: one loaded GGUF, a token-prefix KV cache, and batched scoring of branches.

Sequence 0 of the KV cache always holds ``self._tokens``. Every call finds the longest common token prefix
with what is cached and evaluates only the rest, so a council vote right after the persona's segment costs
only the vote's own tokens. Branches (one per archetype) are forked from sequence 0 into sequences 1..K,
evaluated in one batched decode, read with ``llama_get_logits_ith`` (``Llama.scores`` stays zero without
``logits_all``: every confidence would read zero) and dropped again. Greedy answers to several chats are
decoded the same way, one token per branch in each batch (``generate_many``).
"""

from __future__ import annotations

import codecs
import ctypes
import functools
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import llama_cpp
import numpy as np
from jinja2.sandbox import ImmutableSandboxedEnvironment
from llama_cpp import _internals

from archetypes.backends.base import Chat, ChoiceScores, Constraint, GenerationStats, Message
from council.core.errors import ContextOverflowError, ModelError

_SENTINEL = "\x00{}\x00"
_SENTINEL_RE = re.compile("\x00(\\d+)\x00")
_FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_silence = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
llama_cpp.llama_log_set(_silence, ctypes.c_void_p(0))


@functools.cache
def _numpy_blas_on_one_thread() -> None:
    """Give NumPy's OpenBLAS one thread for the rest of this process, once a llama.cpp model loads.

    llama.cpp's threads take every core. OpenBLAS threads spin for a while after each matrix product (the
    judges' encoder runs one at every reflection point) and take a core from the next decode: measured on 2
    cores, the council path cost 1.36x plain generation with them and 1.24x without. The encoder's products
    are small, so one thread costs it little. Other BLAS libraries (torch's, in training) are left alone.
    """
    from threadpoolctl import ThreadpoolController

    for library in ThreadpoolController().select(internal_api="openblas").lib_controllers:
        library.set_num_threads(1)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _shared(branches: list[list[int]]) -> int:
    """How many leading tokens every branch shares, leaving each at least one token of its own."""
    shared = min(len(b) for b in branches) - 1
    for b in branches[1:]:
        shared = min(shared, _common_prefix(branches[0], b))
    return shared


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


class LlamaBackend:
    """A GGUF model in-process. Persona and archetypes naming the same file share one instance."""

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        max_branches: int = 16,
        adapter: Path | None = None,
        weights: LlamaBackend | None = None,
    ):
        self.path = path
        self.model_id = path.name if adapter is None else f"{path.name}+{adapter.parent.name}"
        self.stats = GenerationStats()
        self._settings = {"n_ctx": n_ctx, "n_threads": n_threads, "max_branches": max_branches}
        threads = n_threads or os.cpu_count() or 1
        _numpy_blas_on_one_thread()
        self._model: _internals.LlamaModel = weights._model if weights is not None else _load_model(path)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = min(512, n_ctx)
        params.n_seq_max = max_branches + 1
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = threads
        self._ctx = _internals.LlamaContext(model=self._model, params=params, verbose=False)
        self.n_ctx = n_ctx
        self.max_branches = max_branches
        self._n_batch = params.n_batch
        self._batch = _internals.LlamaBatch(n_tokens=self._n_batch, embd=0, n_seq_max=max_branches + 1, verbose=False)
        self._n_vocab = self._model.n_vocab()
        self._tokens: list[int] = []
        self._memo: tuple[int, np.ndarray] | None = None  # (position, logits predicting it)
        self._eog = {t for t in (self._model.token_eos(), self._model.token_eot()) if t >= 0}
        meta = self._model.metadata()
        self._template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
            meta.get("tokenizer.chat_template") or _FALLBACK_TEMPLATE
        )
        self._add_bos = self._model.add_bos_token()
        self._token_texts: list[str] | None = None
        if adapter is not None:
            self._set_adapter(adapter)

    def with_adapter(self, adapter: Path) -> LlamaBackend:
        """The same loaded weights with a LoRA ``adapter`` on top, in a context (and KV cache) of its own."""
        return LlamaBackend(self.path, **self._settings, adapter=adapter, weights=self)  # type: ignore[arg-type]

    def _set_adapter(self, path: Path) -> None:
        if not path.is_file():
            raise ModelError(f"LoRA adapter {path} is missing", "run `council persona use base` (or another version)")
        lora = llama_cpp.llama_adapter_lora_init(self._model.model, str(path).encode("utf-8"))
        if not lora:
            raise ModelError(
                f"llama.cpp could not load the LoRA adapter {path}",
                "run `council persona use base` (or another version)",
            )
        self._lora = lora  # freed with the model
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(lora)
        if llama_cpp.llama_set_adapters_lora(self._ctx.ctx, adapters, 1, (ctypes.c_float * 1)(1.0)):
            raise ModelError(f"llama.cpp could not apply the LoRA adapter {path}", "run `council persona use base`")

    # ---- tokens -------------------------------------------------------------------------------------

    def _tok(self, text: str, *, trusted: bool, bos: bool = False) -> list[int]:
        if not text:
            return []
        return self._model.tokenize(text.encode("utf-8"), bos, trusted)

    def render(self, messages: Sequence[Message], prefill: str | None = None) -> list[int]:
        """Tokenize a chat through the model's template.

        Template text may hold special tokens; message content and the prefill never do, so text that
        imitates ``<|im_end|>`` stays plain text and cannot close its turn.
        """
        marked = [{"role": m.role, "content": _SENTINEL.format(i)} for i, m in enumerate(messages)]
        rendered = self._template.render(
            messages=marked,
            add_generation_prompt=prefill is not None,
            bos_token=self._model.token_get_text(self._model.token_bos()),
            eos_token=self._model.token_get_text(self._model.token_eos()),
            raise_exception=_template_error,
        )
        tokens: list[int] = []
        pieces = _SENTINEL_RE.split(rendered)
        for i, piece in enumerate(pieces):
            if i % 2:
                tokens += self._tok(messages[int(piece)].content, trusted=False)
            else:
                tokens += self._tok(piece, trusted=True, bos=self._add_bos and i == 0)
        return tokens + self._tok(prefill or "", trusted=False)

    def chat_text(self, messages: Sequence[dict[str, str]]) -> str:
        """The model's chat template as text, ending where the assistant's answer starts (for datasets)."""
        return self._template.render(
            messages=list(messages),
            add_generation_prompt=True,
            bos_token=self._model.token_get_text(self._model.token_bos()),
            eos_token=self._model.token_get_text(self._model.token_eos()),
            raise_exception=_template_error,
        )

    def _piece(self, token: int, special: bool = False) -> bytes:
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self._model.vocab, token, buf, size, 0, special)
            if n >= 0:
                return buf.raw[:n]
            size = -n

    # ---- KV cache -----------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every cached token (the next call evaluates its whole prompt)."""
        self._ctx.kv_cache_clear()
        self._tokens = []
        self._memo = None

    def _truncate(self, n: int) -> None:
        if n < len(self._tokens):
            self._ctx.kv_cache_seq_rm(0, n, -1)
            del self._tokens[n:]
        if self._memo and self._memo[0] > n:
            self._memo = None

    def _logits(self, index: int) -> np.ndarray:
        ptr = self._ctx.get_logits_ith(index)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()

    def _decode(self, entries: list[tuple[int, int, Sequence[int], bool]]) -> None:
        """Decode (token, position, sequence ids, want logits) entries as one batch."""
        if len(entries) > self._n_batch:
            raise ContextOverflowError(
                f"one evaluation needs {len(entries)} tokens at once but the batch holds {self._n_batch}",
                "use a smaller pool or shorter archetype titles",
            )
        batch = self._batch.batch
        batch.n_tokens = len(entries)
        for i, (token, pos, seqs, want_logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            for j, seq in enumerate(seqs):
                batch.seq_id[i][j] = seq
            batch.n_seq_id[i] = len(seqs)
            batch.logits[i] = want_logits
        self._ctx.decode(self._batch)
        self.stats.tokens_evaluated += len(entries)

    def _check_room(self, n_tokens: int) -> None:
        if n_tokens > self.n_ctx:
            raise ContextOverflowError(
                f"the prompt needs {n_tokens} tokens but the model's context holds {self.n_ctx}",
                "shorten the prompt or raise n_ctx in the config",
            )

    def _extend(self, tokens: list[int]) -> np.ndarray:
        """Append ``tokens`` (at least one) to sequence 0; return the logits after the last one.

        They are kept as the memo too: a generation its caller stops after reading ahead one token (the
        persona at a reflection point) leaves them for the next call on the same text, which then evaluates
        nothing.
        """
        self._check_room(len(self._tokens) + len(tokens))
        for start in range(0, len(tokens), self._n_batch):
            chunk = tokens[start : start + self._n_batch]
            base = len(self._tokens)
            self._decode([(t, base + i, (0,), i == len(chunk) - 1) for i, t in enumerate(chunk)])
            self._tokens += chunk
        logits = self._logits(len(chunk) - 1)
        self._memo = (len(self._tokens), logits)
        return logits

    def _sync(self, prompt: list[int]) -> np.ndarray:
        """Make sequence 0 hold exactly ``prompt``, evaluating only what the cache lacks; return its last logits."""
        keep = _common_prefix(self._tokens, prompt)
        self.stats.tokens_reused += keep
        if keep == len(prompt) and self._memo and self._memo[0] == keep:
            self._truncate(keep)
            return self._memo[1]
        keep = min(keep, len(prompt) - 1)
        self._truncate(keep)
        return self._extend(prompt[keep:])

    # ---- Backend interface --------------------------------------------------------------------------

    def generate(
        self,
        chat: Chat,
        *,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
        constraint: Constraint | None = None,
    ) -> Iterator[str]:
        """Stream pieces continuing ``chat``; stops at end-of-generation, ``max_tokens`` or the constraint's end."""
        prompt = self.render(chat.messages, chat.prefill)
        self._check_room(len(prompt) + 1)
        logits = self._sync(prompt)
        rng = np.random.default_rng(seed)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for _ in range(min(max_tokens, self.n_ctx - len(self._tokens))):
            if constraint is not None:
                logits = logits.copy()
                logits[np.asarray(constraint.banned(), dtype=np.int64)] = -np.inf
            token = _sample(logits, temperature, rng)
            if token in self._eog:
                return
            self.stats.generated_tokens += 1
            piece = decoder.decode(self._piece(token, special=constraint is not None))
            cut = constraint.accept(piece) if constraint is not None else None
            if cut is not None:
                yield cut
                return
            yield piece
            logits = self._extend([token])

    def token_texts(self) -> list[str]:
        """Every token's text (special tokens included), built once."""
        if self._token_texts is None:
            self._token_texts = [
                self._piece(i, special=True).decode("utf-8", errors="replace") for i in range(self._n_vocab)
            ]
        return self._token_texts

    def token_logprobs(self, tokens: Sequence[int], start: int) -> np.ndarray:
        """Log-probability of each of ``tokens[start:]`` given the tokens before it."""
        return np.array([row[t] for row, t in zip(self._rows(tokens, start), tokens[start:], strict=True)])

    def distributions(self, tokens: Sequence[int], start: int) -> np.ndarray:
        """Log-softmax rows of the distributions that predict ``tokens[start:]``, one row per token."""
        return np.stack(list(self._rows(tokens, start)))

    def _rows(self, tokens: Sequence[int], start: int) -> Iterator[np.ndarray]:
        if not 0 < start < len(tokens):
            raise ValueError("start must leave at least one token before and after it")
        self._check_room(len(tokens))
        yield _log_softmax(self._sync(list(tokens[:start])))
        rest = list(tokens[start:-1])
        for i in range(0, len(rest), self._n_batch):
            chunk = rest[i : i + self._n_batch]
            base = len(self._tokens)
            self._decode([(t, base + j, (0,), True) for j, t in enumerate(chunk)])
            self._tokens += chunk
            for j in range(len(chunk)):
                yield _log_softmax(self._logits(j))

    def encode(self, text: str) -> list[int]:
        """The tokens of ``text`` as message content (special tokens stay plain text)."""
        return self._tok(text, trusted=False)

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes as message content."""
        return len(self.encode(text))

    def score(
        self, messages: Sequence[Message], prefills: Sequence[str], choices: Mapping[str, Sequence[str]]
    ) -> list[ChoiceScores]:
        """Each choice's next-token probability after ``messages`` + each prefill, all prefills in one decode."""
        ids = {label: sorted({self._tok(s, trusted=False)[0] for s in forms}) for label, forms in choices.items()}
        flat = [t for group in ids.values() for t in group]
        if len(set(flat)) != len(flat):
            raise ModelError(f"the choices {dict(choices)} share a first token", "use choices that start differently")
        results: list[ChoiceScores] = []
        for start in range(0, len(prefills), self.max_branches):
            rows = self._branch_logits(messages, prefills[start : start + self.max_branches])
            for row in rows:
                p = np.exp(_log_softmax(row))
                raw = {label: float(p[group].sum()) for label, group in ids.items()}
                mass = sum(raw.values())
                probs = {label: (v / mass if mass > 0 else 1 / len(raw)) for label, v in raw.items()}
                results.append(ChoiceScores(probs, mass))
        return results

    def _branch_logits(self, messages: Sequence[Message], prefills: Sequence[str]) -> list[np.ndarray]:
        """Next-token logits after each prefill, in one decode (see ``_fork``)."""
        branches = [self.render(messages, p) for p in prefills]
        try:
            return self._fork(branches, self._continuation_point(messages, branches[0]))
        finally:
            self._drop_branches(len(branches))

    def _fork(self, branches: list[list[int]], continue_at: int = -1) -> list[np.ndarray]:
        """Evaluate ``branches`` into sequences 1..K in one decode; return the logits after each one's last token.

        The branches' common prefix goes to sequence 0 (reusing the cache) and, in the same batch, to every
        branch's sequence; each branch's own tail goes only to its sequence. When ``continue_at`` is where an
        assistant's text ends inside the prefix (the chat goes on after it), the logits there are kept, so the
        assistant can continue its answer afterwards without re-evaluating anything. The caller drops the
        branches (``_drop_branches``) when done with them.
        """
        shared = _shared(branches)
        self._check_room(max(len(b) for b in branches))
        keep = min(_common_prefix(self._tokens, branches[0]), shared)
        self.stats.tokens_reused += keep
        self._truncate(keep)
        tails = sum(len(b) - shared for b in branches)
        if tails > self._n_batch:
            raise ContextOverflowError(
                f"the council's cues need {tails} tokens at once but the batch holds {self._n_batch}",
                "use a smaller pool or shorter archetype titles",
            )
        if shared - keep + tails > self._n_batch:  # a long new prompt: read most of it first, in chunks
            upto = shared - (self._n_batch - tails)
            self._extend(branches[0][keep:upto])
            keep = upto
        seqs = tuple(range(len(branches) + 1))
        entries: list[tuple[int, int, Sequence[int], bool]] = [
            (t, i, seqs, i == continue_at - 1) for i, t in enumerate(branches[0][keep:shared], start=keep)
        ]
        last_index = []
        for seq, branch in enumerate(branches, start=1):
            self._ctx.kv_cache_seq_cp(0, seq, 0, keep)
            entries += [(t, i, (seq,), i == len(branch) - 1) for i, t in enumerate(branch[shared:], start=shared)]
            last_index.append(len(entries) - 1)
        try:
            self._decode(entries)
        except Exception:
            self.reset()
            raise
        self._tokens = branches[0][:shared]
        if keep < continue_at <= shared:
            self._memo = (continue_at, self._logits(continue_at - 1 - keep))
        return [self._logits(i) for i in last_index]

    def _drop_branches(self, k: int) -> None:
        for seq in range(1, k + 1):
            self._ctx.kv_cache_seq_rm(seq, -1, -1)

    def generate_many(self, chats: Sequence[Chat], *, max_tokens: int) -> list[str]:
        """Greedy answers to several chats, decoded side by side: one batch of one token per chat at each step.

        One step for K sequences costs less than K steps for one (here 2.8x one for 4 sequences), and their common
        prefix (a night's commentary shares the whole interaction) is read once. The answers are what ``generate``
        gives one by one, up to the arithmetic of batched matrices.
        """
        answers: list[str] = []
        for start in range(0, len(chats), self.max_branches):
            answers += self._generate_branches(chats[start : start + self.max_branches], max_tokens)
        return answers

    def _generate_branches(self, chats: Sequence[Chat], max_tokens: int) -> list[str]:
        branches = [self.render(c.messages, c.prefill) for c in chats]
        shared = _shared(branches)  # held once in the cache; each branch's tail and answer in cells of its own
        self._check_room(shared + sum(len(b) - shared + max_tokens for b in branches))
        texts = [""] * len(branches)
        decoders = [codecs.getincrementaldecoder("utf-8")(errors="replace") for _ in branches]
        positions = [len(b) for b in branches]
        try:
            logits = dict(enumerate(self._fork(branches)))
            live = list(range(len(branches)))
            for _ in range(max_tokens):
                entries: list[tuple[int, int, Sequence[int], bool]] = []
                for i in list(live):
                    token = int(np.argmax(logits[i]))
                    if token in self._eog:
                        live.remove(i)
                        continue
                    texts[i] += decoders[i].decode(self._piece(token))
                    entries.append((token, positions[i], (i + 1,), True))
                    positions[i] += 1
                self.stats.generated_tokens += len(entries)
                if not entries:
                    break
                self._decode(entries)
                logits = dict(zip(live, (self._logits(k) for k in range(len(entries))), strict=True))
        except Exception:
            self.reset()
            raise
        finally:
            self._drop_branches(len(branches))
        return texts

    def _continuation_point(self, messages: Sequence[Message], tokens: list[int]) -> int:
        """Where the last assistant message ends inside ``tokens``, if the rest of the chat follows it."""
        if len(messages) < 2 or messages[-2].role != "assistant":
            return -1
        head = self.render(messages[:-2], messages[-2].content)
        return len(head) if tokens[: len(head)] == head else -1


def _load_model(path: Path) -> _internals.LlamaModel:
    try:
        return _internals.LlamaModel(path_model=str(path), params=llama_cpp.llama_model_default_params(), verbose=False)
    except ValueError as exc:
        raise ModelError(f"llama.cpp could not load {path}", "check the file is a complete, valid GGUF") from exc


def _template_error(message: str) -> None:
    raise ModelError(f"the model's chat template refused the messages: {message}", "check the message roles")


def _sample(logits: np.ndarray, temperature: float, rng: np.random.Generator, top_k: int = 40) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    top = np.argpartition(logits, -top_k)[-top_k:]
    scaled = logits[top] / temperature
    p = np.exp(scaled - scaled.max())
    return int(top[rng.choice(len(top), p=p / p.sum())])
