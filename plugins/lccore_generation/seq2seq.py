"""The `summarization` and `translation` tasks: a source text in, a target text out.

An encoder-decoder model (T5, BART: ``config.is_encoder_decoder``) reads ``prefix + source`` and
learns the target as its labels. A decoder-only model reads ``prefix + source + separator +
target + end-of-text`` with the loss on the target only, and at evaluation writes the target after
the prompt (left-padded, so that every row continues from its last position).

Metrics come from generated text, not from the teacher-forced pass (which gives the loss):
ROUGE-1/2/L F1 (0-1, `rouge-score` with stemming) for summaries, sacreBLEU and chrF (0-100) for
translations.
"""

from __future__ import annotations

import attrs
import torch

import lccore
from lccore.data import clip_text, read_records

from .generation import PROMPT_IDS, PROMPT_MASK, GenerationOutput, ensure_pad_token, generate, model_is_encoder_decoder, pad, pad_prompts


@attrs.frozen
class Example:
    source: str
    target: str | None
    where: str

    @property
    def text(self) -> str:
        """Source and target as plain text (what a tokenizer built from scratch learns from)."""
        return self.source if self.target is None else f"{self.source}\n{self.target}"


class Seq2SeqTask(lccore.Task):
    default_head = "generative_lm"

    def __init__(self, kind: str, options):
        self.kind = kind  # "summarization" or "translation"
        self.options = options
        if kind == "summarization":
            self.metric, self.metric_names = "rougeL", ("rouge1", "rouge2", "rougeL")
        else:
            self.metric, self.metric_names = "bleu", ("bleu", "chrf")
        self.encoder_decoder: bool | None = None  # known once a tokenizer (hence its model) is seen
        self._tokenizer = None  # forward() gets no tokenizer: the one encode() used is kept

    def head_spec(self) -> dict:
        return {} if self.encoder_decoder is None else {"encoder_decoder": self.encoder_decoder}

    def restore(self, spec: dict) -> None:
        self.encoder_decoder = spec.get("encoder_decoder")

    # --- data ------------------------------------------------------------------------------------

    def read(self, path) -> list[Example]:
        source_key, target_key = self.options.source_field, self.options.target_field
        examples = []
        for where, row in read_records(path, required=(source_key, target_key)):
            for key in (source_key, target_key):
                if not isinstance(row[key], str):
                    raise lccore.DataError(f"{where}: '{key}' must be a string, got {type(row[key]).__name__}")
            examples.append(Example(row[source_key], row[target_key], where))
        return examples

    def parse_input(self, value, where):
        source_key, target_key = self.options.source_field, self.options.target_field
        if isinstance(value, str):
            return Example(value, None, where)
        if isinstance(value, dict) and isinstance(value.get(source_key), str):
            target = value.get(target_key)
            return Example(value[source_key], target if isinstance(target, str) else None, where)
        raise lccore.DataError(f"{where}: expected a string or an object with a string '{source_key}'")

    # --- features --------------------------------------------------------------------------------

    def is_encoder_decoder(self, tokenizer) -> bool:
        if self.encoder_decoder is None:
            self.encoder_decoder = model_is_encoder_decoder(tokenizer.name_or_path)
        return self.encoder_decoder

    def prompt_ids(self, source: str, tokenizer, max_length: int, room: int | None = None) -> list[int]:
        """What the model reads: the encoder's input, or a decoder-only model's prompt (the source
        cut to ``room`` tokens, then the separator)."""
        text = clip_text(self.options.prefix + source, max_length)  # a long document's memory: see clip_text
        if self.is_encoder_decoder(tokenizer):
            return tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
        separator = tokenizer(self.options.separator, add_special_tokens=False)["input_ids"] if self.options.separator else []
        room = max_length - len(separator) if room is None else room
        return tokenizer(text, add_special_tokens=False)["input_ids"][: max(room, 1)] + separator

    def generation_prompt(self, query, tokenizer, max_length, where) -> list[int]:
        """The prompt the `generate` reasoner continues: ``query`` is the source."""
        return self.prompt_ids(self.parse_input(query, where).source, tokenizer, max_length)

    def encode(self, examples, tokenizer, max_length):
        ensure_pad_token(tokenizer)
        self._tokenizer = tokenizer
        if tokenizer.eos_token_id is None and not self.is_encoder_decoder(tokenizer) and any(e.target is not None for e in examples):
            raise lccore.ConfigError("model: a decoder-only model learns to end each target with the end-of-text token, and this tokenizer has none (set its eos_token)")
        features = []
        for example in examples:
            if example.target is None or self.is_encoder_decoder(tokenizer):
                prompt = self.prompt_ids(example.source, tokenizer, max_length)
                feature = {"input_ids": prompt, "prompt": prompt}
                if example.target is not None:
                    feature["labels"] = tokenizer(text_target=clip_text(example.target, max_length), truncation=True, max_length=max_length)["input_ids"]
            else:
                target = tokenizer(clip_text(example.target, max_length), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                # The source gives way to the target, down to half of max_length.
                separator = len(tokenizer(self.options.separator, add_special_tokens=False)["input_ids"]) if self.options.separator else 0
                room = max(max_length - len(target), max_length // 2) - separator
                prompt = self.prompt_ids(example.source, tokenizer, max_length, room)
                target = target[: max(max_length - len(prompt), 1)]
                feature = {"input_ids": prompt + target, "labels": [-100] * len(prompt) + target, "prompt": prompt}
            features.append(feature)
        return features

    def collate(self, features, tokenizer):
        ensure_pad_token(tokenizer)
        encoder_decoder = self.is_encoder_decoder(tokenizer)
        if not all("labels" in f for f in features):  # prediction: the prompts alone
            ids, mask = pad_prompts([f["prompt"] for f in features], tokenizer, encoder_decoder)
            return {"input_ids": ids, "attention_mask": mask}
        inputs = [f["input_ids"] for f in features]
        batch = {
            "input_ids": pad(inputs, tokenizer.pad_token_id),
            "attention_mask": pad([[1] * len(row) for row in inputs], 0),
            "labels": pad([f["labels"] for f in features], -100),
        }
        # Evaluation (run under inference mode) also generates: a decoder-only model needs the
        # prompts apart, left-padded. Training batches go to model(**batch) and must not have them.
        if torch.is_inference_mode_enabled() and not encoder_decoder:
            batch[PROMPT_IDS], batch[PROMPT_MASK] = pad_prompts([f["prompt"] for f in features], tokenizer, False)
        return batch

    # --- evaluation and prediction ---------------------------------------------------------------

    def forward(self, model, batch):
        inputs = {k: v for k, v in batch.items() if k not in (PROMPT_IDS, PROMPT_MASK)}
        loss = model(**inputs).loss if "labels" in batch else None
        generated = generate(
            model, self._tokenizer, batch.get(PROMPT_IDS, batch["input_ids"]), batch.get(PROMPT_MASK, batch["attention_mask"]),
            max_new_tokens=self.options.max_new_tokens, num_beams=self.options.num_beams, do_sample=False,
        )
        return GenerationOutput(loss=loss, generated=[row for row, _ in generated])

    def decode(self, outputs, batch, features):
        return [{"text": text.strip()} for text in self._tokenizer.batch_decode(outputs.generated, skip_special_tokens=True)]

    def metrics(self, predictions, examples):
        hypotheses = [p["text"] for p in predictions]
        references = [e.target for e in examples]
        return rouge(hypotheses, references) if self.kind == "summarization" else bleu(hypotheses, references)

    def example_data(self, directory):
        # JSONL {source, target} pairs: a long text and its first clause (summarization), or a
        # sentence and its word-by-word French (translation).
        import json
        from pathlib import Path

        if self.kind == "summarization":
            pairs = [
                ("alice lives in paris and works at london with bob , who went to rome today .", "alice lives in paris ."),
                ("the film was great , the acting really lovely and the plot quite wonderful .", "the film was great ."),
                ("bob visited new york with carol , and dave met erin in paris today .", "bob visited new york ."),
                ("the meal was awful , the show boring and the book very dull .", "the meal was awful ."),
            ]
        else:
            pairs = [
                ("the film was great .", "le film etait super ."),
                ("the book was boring .", "le livre etait ennuyeux ."),
                ("alice lives in paris .", "alice vit a paris ."),
                ("a good film .", "un bon film ."),
            ]
        source, target = self.options.source_field, self.options.target_field
        paths = {}
        for split, rows in (("train", pairs), ("dev", pairs[::-1])):
            path = Path(directory) / f"{split}.jsonl"
            path.write_text("".join(json.dumps({source: s, target: t}) + "\n" for s, t in rows), encoding="utf-8")
            paths[split] = path
        return paths


def rouge(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F1 (0-1)."""
    from rouge_score import rouge_scorer

    names = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(names), use_stemmer=True)
    scores = [scorer.score(reference, hypothesis) for hypothesis, reference in zip(hypotheses, references)]
    return {name: sum(s[name].fmeasure for s in scores) / len(scores) if scores else 0.0 for name in names}


def bleu(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus sacreBLEU (13a tokenisation) and chrF, both 0-100."""
    import sacrebleu

    return {"bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score, "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score}
