"""Models built from a size instead of loaded: ``model: {architecture: bert, hidden_size: 64, ...}``.

The tokenizer is trained on the run's training texts with the ``tokenizers`` library (WordPiece
for BERT-style encoders, byte-level BPE for GPT-2-style decoders) unless ``model.tokenizer`` names
an existing one; the model gets random weights from the run's seed. Both are written to a folder
that the head then loads like any pretrained model, and the run saves the tokenizer with the model.
Training the tokenizer is deterministic, so a resumed run rebuilds the same one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .config import ScratchModelConfig
from .errors import ConfigError

#: What each architecture is: the objective it pretrains with and the tokenizer it gets.
ARCHITECTURES = {"bert": "mlm", "gpt2": "clm"}


def build(spec: ScratchModelConfig, texts: Iterable[str], directory: Path, *, max_length: int, seed: int) -> str:
    """Write a randomly initialised model of ``spec``'s size and its tokenizer to ``directory``.

    ``texts`` is read in passes (it may be a view that reads the training files again each time),
    never held whole."""
    import torch
    from transformers import AutoTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    if spec.tokenizer:
        try:
            tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model.tokenizer: cannot load '{spec.tokenizer}': {str(exc).splitlines()[0]}") from None
    else:
        texts = NonBlank(texts)
        if not any(True for _ in texts):
            raise ConfigError("model: building a tokenizer from scratch needs training texts (task.train has none)")
        tokenizer = train_tokenizer(spec, texts)
    positions = spec.max_positions or max(512, max_length)
    if positions < max_length:
        raise ConfigError(f"model.max_positions: {positions} is shorter than train.max_length ({max_length})")
    config = model_config(spec, tokenizer, positions)
    torch.manual_seed(seed)
    model = model_class(spec)(config)
    # transformers (5) writes a model only from global rank 0 once torch.distributed is up; the
    # process of a launch that builds this folder (whichever takes the cache's lock) may be another
    model.should_save_on_this_rank = lambda is_main_process: True
    model.save_pretrained(directory)  # under lccore.train, which keeps transformers' bars off
    if not (directory / "config.json").is_file():
        raise RuntimeError(f"{directory}: transformers wrote no model here (save_pretrained skipped this process)")
    tokenizer.save_pretrained(directory)
    return str(directory)


def model_config(spec: ScratchModelConfig, tokenizer, positions: int):
    from transformers import BertConfig, GPT2Config

    if spec.hidden_size % spec.num_heads:
        raise ConfigError(f"model.hidden_size: {spec.hidden_size} is not a multiple of model.num_heads ({spec.num_heads})")
    intermediate = spec.intermediate_size or 4 * spec.hidden_size
    if spec.architecture == "bert":
        return BertConfig(
            vocab_size=len(tokenizer), hidden_size=spec.hidden_size, num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads, intermediate_size=intermediate, max_position_embeddings=positions,
            pad_token_id=tokenizer.pad_token_id,
        )
    return GPT2Config(
        vocab_size=len(tokenizer), n_embd=spec.hidden_size, n_layer=spec.num_layers, n_head=spec.num_heads,
        n_inner=intermediate, n_positions=positions, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def model_class(spec: ScratchModelConfig):
    from transformers import BertForMaskedLM, GPT2LMHeadModel

    return BertForMaskedLM if spec.architecture == "bert" else GPT2LMHeadModel


def train_tokenizer(spec: ScratchModelConfig, texts: Iterable[str]):
    """WordPiece (lower-cased, BERT's special tokens) or byte-level BPE (GPT-2's end-of-text token)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if spec.architecture == "bert":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        # tokenizers numbers the "##x" continuation pieces in hash order, a different order in every
        # process, and breaks ties between merges by those numbers: the same corpus gave different
        # vocabularies (huggingface/tokenizers#1794). Given up front as special tokens they are
        # numbered in our order; they are then made ordinary vocabulary again.
        pieces = sorted({f"##{char}" for text in texts for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.normalizer.normalize_str(text)) for char in word[1:]})
        trainer = trainers.WordPieceTrainer(vocab_size=spec.vocab_size, special_tokens=specials + pieces, show_progress=False)
        tokenizer.train_from_iterator(texts, trainer=trainer)
        tokenizer = without_added_pieces(tokenizer, specials)
        cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
            sep_token="[SEP]", mask_token="[MASK]", model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        )
    end = "<|endoftext|>"
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size, special_tokens=[end], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # GPT-2 has no padding token; batches pad with end-of-text, and the attention mask hides it.
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=end, eos_token=end, unk_token=end, pad_token=end,
        model_input_names=["input_ids", "attention_mask"],
    )


class NonBlank:
    """The non-blank texts of a re-iterable, read afresh on each pass."""

    def __init__(self, texts: Iterable[str]):
        self.texts = texts

    def __iter__(self):
        return (text for text in self.texts if text.strip())


def without_added_pieces(tokenizer, specials: list[str]):
    """The tokenizer with only ``specials`` as special tokens: the "##x" pieces given to the trainer
    as special tokens (to fix their ids) stay in the vocabulary as ordinary pieces."""
    import json

    from tokenizers import Tokenizer

    state = json.loads(tokenizer.to_str())
    state["added_tokens"] = [added for added in state["added_tokens"] if added["content"] in specials]
    return Tokenizer.from_str(json.dumps(state))
