"""The `dialogue` task: a decoder-only model fine-tuned on conversations, the loss on the
assistant's replies only.

A conversation is rendered to text with the tokenizer's chat template, or with lccore's default
plain template (:data:`DEFAULT_TEMPLATE`, a Jinja chat template like any other) when it has none
(or ``task.template: default``)::

    <|system|>
    You are terse.
    <|user|>
    Hello
    <|assistant|>
    Hi.<|endoftext|>

Which tokens are the assistant's is found by rendering the conversation turn by turn: the reply
to turn i is what ``render(messages[:i + 1])`` adds to ``render(messages[:i], generation
prompt)``. Those character spans pick the labelled tokens of the whole tokenised conversation.

The run records the template it trained with (its text and hash) and the token that ends an
assistant's turn (:meth:`DialogueTask.tokenizer_record`, in the manifest): ``lccore.load`` refuses
a run whose tokenizer now renders with another template, and generation stops at that token.

Evaluation scores the given replies (perplexity). A prediction input (a user message, or a
conversation) gets a generated reply and the model's perplexity of that reply.
"""

from __future__ import annotations

import hashlib
import math

import attrs

import lccore
from lccore.data import clip_text, read_records

from .generation import PROMPT_IDS, PROMPT_MASK, GenerationOutput, causal_batch, ensure_pad_token, generate, pad_prompts, token_nll

ROLES = ("system", "user", "assistant")


@attrs.frozen
class Example:
    messages: tuple  # of (role, content) pairs
    where: str
    reply_wanted: bool = False  # a prediction input: the model writes the next reply

    @property
    def text(self) -> str:
        """The conversation as plain text (what a tokenizer built from scratch learns from)."""
        return default_render(self.messages, "", False)


def parse_messages(value, where: str, key: str) -> tuple:
    if not isinstance(value, list) or not value:
        raise lccore.DataError(f"{where}: '{key}' must be a non-empty list of {{role, content}} objects")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise lccore.DataError(f"{where}: '{key}[{i}]' must be an object with a 'role' and a string 'content'")
        if message.get("role") not in ROLES:
            raise lccore.DataError(f"{where}: '{key}[{i}].role' must be one of {', '.join(ROLES)}, got {message.get('role')!r}")
        messages.append((message["role"], message["content"]))
    return tuple(messages)


def default_render(messages, eos: str, add_generation_prompt: bool) -> str:
    """What :data:`DEFAULT_TEMPLATE` renders, in Python (a tokenizer built from scratch learns from it)."""
    text = "".join(f"<|{role}|>\n{content}{eos if role == 'assistant' else ''}\n" for role, content in messages)
    return text + ("<|assistant|>\n" if add_generation_prompt else "")


#: The plain template for tokenizers without one: a role line, the content, and the end-of-text
#: token after each reply (so that generation stops there). Rendered by the tokenizer's own
#: chat-template engine, exactly as a tokenizer's template is.
DEFAULT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

#: A reply rendered to find what the template puts after one (its end-of-turn token).
_PROBE = "lccore-probe-reply"


class Template:
    """Renders conversations with the tokenizer's chat template or the default one, and knows the
    token that ends an assistant's turn."""

    def __init__(self, tokenizer, mode: str):
        self.tokenizer = tokenizer
        self.own = own = getattr(tokenizer, "chat_template", None)
        self.chat = mode == "auto" and isinstance(own, str) and bool(own)
        if not self.chat and tokenizer.eos_token is None:
            raise lccore.ConfigError("task.template: the default template ends each reply with the end-of-text token; the tokenizer has none")
        self.text = own if self.chat else DEFAULT_TEMPLATE
        self.sha256 = hashlib.sha256(self.text.encode("utf-8")).hexdigest()
        self.end_of_turn = self._end_of_turn()

    def render(self, messages, add_generation_prompt: bool = False, where: str = "") -> str:
        from jinja2 import TemplateError

        try:
            return self.tokenizer.apply_chat_template(
                [{"role": role, "content": content} for role, content in messages], chat_template=self.text, tokenize=False,
                add_generation_prompt=add_generation_prompt,
            )
        except TemplateError as exc:
            raise lccore.DataError(f"{where}: the tokenizer's chat template refused the conversation: {exc}") from None

    def _end_of_turn(self) -> str | None:
        """The special token the template puts right after a reply (ChatML's ``<|im_end|>``, the
        default template's end-of-text), or None when it puts none."""
        full = self.render((("user", "hello"), ("assistant", _PROBE)), where="the template's probe")
        after = full[full.rindex(_PROBE) + len(_PROBE):].lstrip(" ")
        specials = sorted({str(t) for t in getattr(self.tokenizer, "all_special_tokens", [])} | set(getattr(self.tokenizer, "added_tokens_encoder", {})), key=len, reverse=True)
        return next((token for token in specials if token and after.startswith(token)), None)

    def end_ids(self) -> list[int]:
        """The end-of-turn token's id (empty when the template has none)."""
        if self.end_of_turn is None:
            return []
        return [self.tokenizer.convert_tokens_to_ids(self.end_of_turn)]

    def reply_spans(self, messages, full: str, where: str) -> list[tuple[int, int]]:
        """Character spans of the assistant's replies in ``full`` (the rendered conversation)."""
        spans = []
        for i, (role, _) in enumerate(messages):
            if role != "assistant":
                continue
            before = self.render(messages[:i], add_generation_prompt=True, where=where)
            upto = self.render(messages[: i + 1], where=where)
            if not (upto.startswith(before) and full.startswith(upto)):
                raise lccore.ConfigError(
                    f"task.template: the tokenizer's chat template does not render {where} turn by turn "
                    "(an earlier turn changes when a later one is added); set task.template: default"
                )
            end = len(upto)
            while end > len(before) and upto[end - 1].isspace():  # the template's line break, not the reply
                end -= 1
            spans.append((len(before), end))
        return spans


class DialogueTask(lccore.Task):
    default_head = "generative_lm"
    metric = "perplexity"
    metric_names = ("perplexity", "nll")
    greater_is_better = False

    def __init__(self, options):
        self.options = options
        self._tokenizer = None  # forward() gets no tokenizer: the one encode() used is kept

    def head_spec(self) -> dict:
        return {"decoder_only": True}  # the head refuses an encoder-decoder model

    # --- data ------------------------------------------------------------------------------------

    def read(self, path) -> list[Example]:
        key = self.options.messages_field
        examples = []
        for where, row in read_records(path, required=(key,)):
            messages = parse_messages(row[key], where, key)
            if not any(role == "assistant" for role, _ in messages):
                raise lccore.DataError(f"{where}: the conversation has no assistant message to learn from")
            examples.append(Example(messages, where))
        return examples

    def parse_input(self, value, where):
        key = self.options.messages_field
        if isinstance(value, str):
            return Example((("user", value),), where, reply_wanted=True)
        if isinstance(value, dict) and key in value:
            value = value[key]
        if isinstance(value, list):
            return Example(parse_messages(value, where, key), where, reply_wanted=True)
        raise lccore.DataError(f"{where}: expected a user message (a string), a list of messages or an object with '{key}'")

    # --- features --------------------------------------------------------------------------------

    def template(self, tokenizer) -> Template:
        cached = getattr(self, "_template", None)
        if cached is None or cached.tokenizer is not tokenizer or cached.own != getattr(tokenizer, "chat_template", None):
            self._template = Template(tokenizer, self.options.template)
        return self._template

    def tokenizer_record(self, tokenizer) -> dict:
        """The chat template the run renders with (its source, hash and text) and its end-of-turn
        token: recorded in the manifest, and compared when the run is loaded."""
        template = self.template(tokenizer)
        if template.end_of_turn is None:
            raise lccore.ConfigError(
                "task.template: the tokenizer's chat template puts no special token after an assistant's reply, so the model "
                "could not learn where a reply ends and generation would not stop; set task.template: default")
        source = "tokenizer" if template.chat else "lccore default"
        return {"chat_template": {"source": source, "sha256": template.sha256, "text": template.text}, "end_of_turn": template.end_of_turn}

    def end_token_ids(self, tokenizer) -> list[int]:
        """Tokens that end a generated reply besides the model's end-of-text: the end of a turn."""
        return self.template(tokenizer).end_ids()

    def describe_features(self, features, tokenizer) -> str | None:
        """The share of supervised tokens (the assistant's replies, their end-of-turn token
        included) and the first conversation decoded with the parts that are not learnt in
        ``[[...]]``: a mask that is wrong shows before the hours of training."""
        rows = [f for f in features if "labels" in f]
        if not rows:
            return None
        total = sum(len(f["labels"]) for f in rows)
        supervised = sum(label != -100 for f in rows for label in f["labels"])
        end = self.template(tokenizer).end_of_turn
        first = rows[0]
        pieces, current, learnt = [], [], None
        for token, label in zip(first["input_ids"], first["labels"]):
            if (label != -100) != learnt and current:
                text = tokenizer.decode(current)
                pieces.append(text if learnt else f"[[{text}]]")
                current = []
            learnt = label != -100
            current.append(token)
        if current:
            text = tokenizer.decode(current)
            pieces.append(text if learnt else f"[[{text}]]")
        end_id = tokenizer.convert_tokens_to_ids(end) if end else None
        def ends_learnt(row) -> bool:
            return [token for token, label in zip(row["input_ids"], row["labels"]) if label != -100][-1:] == [end_id]

        ends = "ends with" if ends_learnt(first) else "does NOT end with"
        cut = sum(not ends_learnt(row) for row in rows)
        warning = (f"\nwarning: {cut} of these {len(rows)} conversations lose the end of their last reply to train.max_length "
                   f"({max(len(row['input_ids']) for row in rows)} tokens kept): the model learns to stop only from replies that keep "
                   f"their end-of-turn token; raise train.max_length") if cut else ""
        return (f"dialogue: {supervised} of {total} tokens ({supervised / max(total, 1):.0%}) are supervised (the assistant's replies) "
                f"in the first {len(rows)} conversations; the first one, [[not learnt]]; its last reply {ends} the supervised end-of-turn token {end!r}:\n"
                + "".join(pieces) + warning)

    def encode(self, examples, tokenizer, max_length):
        ensure_pad_token(tokenizer)
        self._tokenizer = tokenizer
        template = self.template(tokenizer)
        features = []
        for example in examples:
            if example.reply_wanted:
                prompt = self.prompt_ids(example.messages, tokenizer, max_length, example.where, template)
                features.append({"input_ids": prompt, "prompt": prompt})
            else:
                ids, labels = self.conversation_ids(example.messages, tokenizer, max_length, example.where, template)
                features.append({"input_ids": ids, "labels": labels})
        return features

    def conversation_ids(self, messages, tokenizer, max_length, where, template=None) -> tuple[list[int], list[int]]:
        """Token ids of the rendered conversation and labels: the id on the assistant's tokens,
        -100 elsewhere. Too long a conversation loses its oldest tokens, never the last reply."""
        template = template or self.template(tokenizer)
        full = template.render(messages, where=where)
        spans = template.reply_spans(messages, full, where)
        try:
            encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError:
            raise lccore.ConfigError("model: task 'dialogue' needs a fast tokenizer (one that reports character offsets)") from None
        ids, starts = encoded["input_ids"], [start for start, _ in encoded["offset_mapping"]]
        labels = [token if any(a <= start < b for a, b in spans) else -100 for token, start in zip(ids, starts)]
        if len(ids) > max_length:
            turn = self._last_turn_start(messages, full, spans[-1][0], template, where)
            first = next(i for i, start in enumerate(starts) if start >= turn)
            cut = min(len(ids) - max_length, first)
            ids, labels = ids[cut : cut + max_length], labels[cut : cut + max_length]
        return ids, labels

    @staticmethod
    def _last_turn_start(messages, full: str, reply_start: int, template: Template, where: str) -> int:
        """Where the last reply's turn (its role header) begins in ``full``."""
        last = max(i for i, (role, _) in enumerate(messages) if role == "assistant")
        if last == 0:
            return 0
        history = template.render(messages[:last], where=where)
        return len(history) if full.startswith(history) and len(history) <= reply_start else reply_start

    def prompt_ids(self, messages, tokenizer, max_length, where, template=None) -> list[int]:
        """The generation prompt for the next reply: the conversation up to its last user message
        (a trailing reply is dropped: the model writes its own), its oldest tokens cut to fit."""
        template = template or self.template(tokenizer)
        messages = list(messages)
        while messages and messages[-1][0] == "assistant":
            messages.pop()
        if not messages:
            raise lccore.DataError(f"{where}: the conversation has no message before the assistant's reply")
        rendered = clip_text(template.render(messages, add_generation_prompt=True, where=where), max_length, keep="end")
        return tokenizer(rendered, add_special_tokens=False)["input_ids"][-max_length:]

    def generation_prompt(self, query, tokenizer, max_length, where) -> list[int]:
        """The prompt the `generate` reasoner continues: a reply to ``query`` (a user message or a
        conversation)."""
        return self.prompt_ids(self.parse_input(query, where).messages, tokenizer, max_length, where)

    def collate(self, features, tokenizer):
        ensure_pad_token(tokenizer)
        if "prompt" in features[0]:  # prediction: generate a reply to each prompt
            ids, mask = pad_prompts([f["prompt"] for f in features], tokenizer, encoder_decoder=False)
            return {PROMPT_IDS: ids, PROMPT_MASK: mask}
        return causal_batch([f["input_ids"] for f in features], [f["labels"] for f in features], tokenizer.pad_token_id)

    # --- evaluation and prediction ---------------------------------------------------------------

    def forward(self, model, batch):
        if PROMPT_IDS not in batch:  # evaluation: the given replies, teacher-forced
            outputs = model(**batch)
            nll, tokens = token_nll(outputs.logits, batch["labels"])
            return GenerationOutput(loss=outputs.loss, nll=nll, tokens=tokens)
        tokenizer = self._tokenizer
        prompts, mask = batch[PROMPT_IDS], batch[PROMPT_MASK]
        generated = generate(model, tokenizer, prompts, mask, max_new_tokens=self.options.max_new_tokens, num_beams=self.options.num_beams, do_sample=False,
                             extra_ends=self.end_token_ids(tokenizer))
        replies = [row for row, _ in generated]
        # The model's perplexity of its own reply: prompt + reply again, the loss on the reply.
        rows = [ids[keep.bool()].tolist() for ids, keep in zip(prompts, mask)]
        scored = causal_batch([p + r for p, r in zip(rows, replies)], [[-100] * len(p) + r for p, r in zip(rows, replies)], tokenizer.pad_token_id)
        scored = {k: v.to(prompts.device) for k, v in scored.items()}
        nll, tokens = token_nll(model(**scored).logits, scored["labels"])
        return GenerationOutput(generated=replies, nll=nll, tokens=tokens)

    def decode(self, outputs, batch, features):
        if outputs.generated is None:
            return [{"perplexity": _perplexity(n, t), "nll": n, "tokens": t} for n, t in zip(outputs.nll, outputs.tokens)]
        texts = self._tokenizer.batch_decode(outputs.generated, skip_special_tokens=True)
        return [{"reply": text.strip(), "perplexity": _perplexity(n, t)} for text, n, t in zip(texts, outputs.nll, outputs.tokens)]

    def metrics(self, predictions, examples):
        nll = sum(p["nll"] for p in predictions)
        tokens = sum(p["tokens"] for p in predictions)
        mean = nll / tokens if tokens else float("nan")
        return {"perplexity": math.exp(mean) if tokens else float("nan"), "nll": mean}

    def example_data(self, directory):
        # JSONL conversations: a system message, a two-turn exchange, and single exchanges.
        import json
        from pathlib import Path

        def conversation(*turns):
            return {self.options.messages_field: [{"role": role, "content": content} for role, content in turns]}

        train = [
            conversation(("user", "where does alice live ?"), ("assistant", "alice lives in paris .")),
            conversation(("system", "very good show"), ("user", "who works at london ?"), ("assistant", "bob works at london .")),
            conversation(("user", "where does bob live ?"), ("assistant", "nobody knows ."), ("user", "who knows ?"), ("assistant", "carol knows .")),
            conversation(("user", "was the film good ?"), ("assistant", "the film was great .")),
        ]
        dev = [conversation(("user", "where does erin live ?"), ("assistant", "erin lives in rome ."))]
        paths = {}
        for split, rows in (("train", train), ("dev", dev)):
            path = Path(directory) / f"{split}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            paths[split] = path
        return paths


def _perplexity(nll: float, tokens: int) -> float | None:
    return round(math.exp(nll / tokens), 4) if tokens else None

