"""The generation plugin: dialogue, summarization and translation tasks, the generative heads, the
`generate` reasoner and `lccore generate`, on tiny GPT-2 and T5 models built from configs."""

from __future__ import annotations

import json
import random

import pytest

import lccore
from conftest import CONVERSATIONS, END, STORY, byte_level_bpe, write_jsonl  # noqa: F401

LEXICON = {"cat": "katze", "dog": "hund", "house": "haus", "red": "rot", "big": "gross", "small": "klein", "sees": "sieht", "blue": "blau", "tree": "baum", "old": "alt"}
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and do not crawl when another process holds a core."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def t5_model(tmp_path_factory) -> str:
    """A 2-layer, 32-wide T5 whose BPE vocabulary holds each test word whole."""
    import torch
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    backend = byte_level_bpe(list(LEXICON) + list(LEXICON.values()), ["<pad>", "</s>", "<unk>"], 400, add_prefix_space=True)
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])  # T5 ends its input with </s>
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_input_names=["input_ids", "attention_mask"]
    )
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, feed_forward_proj="relu",
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    directory = tmp_path_factory.mktemp("tiny-t5")
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def load_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def dialogue_task(**options):
    return lccore.Engine().create("task", "dialogue", options)


def as_messages(conversation):
    return tuple((m["role"], m["content"]) for m in conversation)


def labelled_text(tokenizer, labels) -> str:
    return tokenizer.decode([t for t in labels if t != -100])


# --- dialogue: which tokens are learnt -------------------------------------------------------------


def test_dialogue_labels_only_the_assistant_replies(gpt2_model):
    tokenizer = load_tokenizer(gpt2_model)
    task = dialogue_task()
    ids, labels = task.conversation_ids(as_messages(CONVERSATIONS[2]), tokenizer, 256, "x:1")
    assert len(ids) == len(labels)
    assert labelled_text(tokenizer, labels) == f"hi there, how can i help?{END}why did the chicken cross the road?{END}"
    assert all(label in (-100, token) for token, label in zip(ids, labels))
    unlabelled = tokenizer.decode([t for t, label in zip(ids, labels) if label == -100])
    assert unlabelled == "<|user|>\nhello\n<|assistant|>\n\n<|user|>\ntell me a joke\n<|assistant|>\n\n"

    # A tokenizer with a chat template: its own rendering, the same rule.
    tokenizer.chat_template = CHATML
    ids, labels = task.conversation_ids(as_messages(CONVERSATIONS[1]), tokenizer, 256, "x:2")
    assert tokenizer.decode(ids).startswith("<|im_start|>system\nyou answer briefly.<|im_end|>")
    assert labelled_text(tokenizer, labels) == "blue.<|im_end|>"
    _, labels = dialogue_task(template="default").conversation_ids(as_messages(CONVERSATIONS[1]), tokenizer, 256, "x:2")
    assert labelled_text(tokenizer, labels) == f"blue.{END}"


def test_long_dialogue_loses_its_oldest_tokens_and_keeps_the_last_reply(gpt2_model):
    tokenizer = load_tokenizer(gpt2_model)
    task = dialogue_task()
    full, _ = task.conversation_ids(as_messages(CONVERSATIONS[2]), tokenizer, 256, "x:1")
    ids, labels = task.conversation_ids(as_messages(CONVERSATIONS[2]), tokenizer, len(full) - 5, "x:1")
    assert ids == full[5:]
    assert labelled_text(tokenizer, labels).endswith(f"why did the chicken cross the road?{END}")
    # Too short even for the last turn: the reply's beginning stays, its header first.
    ids, labels = task.conversation_ids(as_messages(CONVERSATIONS[2]), tokenizer, 6, "x:1")
    assert len(ids) == 6 and tokenizer.decode(ids).startswith("<|assistant|>\nwhy")


def test_dialogue_data_errors_name_the_line(tmp_path):
    task = dialogue_task()
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": CONVERSATIONS[0]}, {"messages": [{"role": "bot", "content": "hi"}]}])
    with pytest.raises(lccore.DataError, match=r"bad\.jsonl:2: 'messages\[0\]\.role' must be one of system, user, assistant, got 'bot'"):
        task.read(bad)
    silent = write_jsonl(tmp_path / "silent.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(lccore.DataError, match=r"silent\.jsonl:1: the conversation has no assistant message"):
        task.read(silent)


# --- dialogue: fine-tuning and generating -------------------------------------------------------


@pytest.fixture(scope="module")
def chat(dialogue_run):
    return lccore.load(dialogue_run.output_dir)


def generator(**options):
    return lccore.Engine().create("reasoner", "generate", options)


def test_dialogue_run_memorises_replies_and_generate_reproduces_them(dialogue_run, chat):
    test = dialogue_run.metrics["test"]
    assert test["after"]["perplexity"] < 2.0 < 50 < test["before"]["perplexity"]
    assert dialogue_run.config.head.name == "generative_lm"
    answer = generator().answer("what is the capital of france?", predictor=chat)
    assert answer == {"text": "paris is the capital of france.", "tokens": answer["tokens"], "prompt_tokens": answer["prompt_tokens"], "finish_reason": "stop"}
    assert answer["prompt_tokens"] == len(chat.tokenizer(chat.task.template(chat.tokenizer).render([("user", "what is the capital of france?")], add_generation_prompt=True), add_special_tokens=False)["input_ids"])
    history = CONVERSATIONS[2][:3]  # the second user turn: the reply depends on the history
    assert generator().answer({"messages": history}, predictor=chat)["text"] == "why did the chicken cross the road?"
    record = chat.predict(["count to three"])[0]
    assert record["reply"] == "one two three." and 1.0 <= record["perplexity"] < 2.0


def test_greedy_beam_and_prompt_lookup_agree_on_a_memorised_reply(chat):
    greedy = generator(strategy="greedy").answer("count to three", predictor=chat)
    beam = generator(strategy="beam", num_beams=3).answer("count to three", predictor=chat)
    lookup = generator(strategy="prompt_lookup", prompt_lookup_tokens=2).answer("count to three", predictor=chat)
    assert greedy["text"] == beam["text"] == lookup["text"] == "one two three."
    cut = generator(max_new_tokens=2).answer("count to three", predictor=chat)
    assert cut["tokens"] == 2 and cut["finish_reason"] == "length" and "one two three.".startswith(cut["text"])


def test_batched_generation_equals_one_by_one(chat):
    queries = ["hello", "what is the capital of france?", {"messages": CONVERSATIONS[2][:3]}, "the cat sat on"]  # unequal lengths: padding
    reasoner = generator(max_new_tokens=12)
    assert reasoner.answer_batch(queries, chat) == [reasoner.answer(q, predictor=chat) for q in queries]


def test_stop_strings_cut_the_text(chat):
    full = generator().answer("what is the capital of france?", predictor=chat)["text"]
    answer = generator(stop=["capital", "zzz"]).answer("what is the capital of france?", predictor=chat)
    assert answer["text"] == "paris is the " and full.startswith(answer["text"])
    assert answer["finish_reason"] == "stop" and answer["tokens"] < generator().answer("what is the capital of france?", predictor=chat)["tokens"]
    streamed = "".join(generator(stop=["capital"]).stream("what is the capital of france?", chat))
    assert streamed == "paris is the "


def test_sampling_is_reproducible_with_a_seed_and_varies_across_seeds(chat):
    def sample(seed):
        return generator(strategy="sample", temperature=3.0, max_new_tokens=12, seed=seed).answer("the cat", predictor=chat)["text"]

    assert sample(1) == sample(1)
    assert len({sample(seed) for seed in range(1, 5)}) > 1


def test_generate_works_on_a_pretraining_run(gpt2_model, tmp_path):
    text = tmp_path / "story.txt"
    text.write_text("\n".join(STORY * 4) + "\n", encoding="utf-8")
    config = {"model": gpt2_model, "task": {"name": "clm", "train": str(text)}, "optimizer": {"lr": 5e-3}, "train": {"epochs": 1, "batch_size": 4, "max_length": 32}}
    predictor = lccore.train(config, tmp_path / "run", progress=False).load()
    answer = generator(max_new_tokens=5).answer("the cat", predictor=predictor)
    assert answer["tokens"] >= 1 and answer["finish_reason"] in ("stop", "length")
    assert "".join(generator(max_new_tokens=5).stream("the cat", predictor)) == answer["text"]
    # A prompt longer than the model's 256 positions loses its oldest tokens (an IndexError from
    # the position embeddings before): batched, streamed, and through the CLI.
    long = "the cat sat on the mat " * 120
    cut = generator(max_new_tokens=5).answer(long, predictor=predictor)
    assert cut["prompt_tokens"] == 256 - 5 and 1 <= cut["tokens"] <= 5
    assert "".join(generator(max_new_tokens=5).stream(long, predictor)) == cut["text"]


def test_generation_never_runs_past_the_models_context(chat, capsys):
    """prompt + max_new_tokens beyond the 256 positions of the test model: fewer tokens are
    written, finish_reason length (it was an IndexError, a traceback in the CLI, a 500 served)."""
    many = generator(strategy="sample", temperature=5.0, seed=1, max_new_tokens=300)
    long_prompt = "hello " * 100  # the dialogue task keeps its last train.max_length (64) tokens
    answer = many.answer(long_prompt, predictor=chat)
    assert answer["prompt_tokens"] + answer["tokens"] <= 256 and answer["finish_reason"] in ("stop", "length")
    streamed = "".join(many.stream(long_prompt, chat))
    assert streamed == answer["text"]
    status, out, err = cli(capsys, "generate", str(chat.run_dir), "--prompt", long_prompt, "--max-new-tokens", "300", "--strategy", "sample", "--temperature", "5", "--seed", "1")
    assert status == 0 and out.strip() == answer["text"].strip(), err


def test_policies_guard_answers_batches_and_streams(dialogue_run, tmp_path):
    log = tmp_path / "audit.jsonl"
    redact_paris = {"name": "blocklist", "terms": ["paris"], "action": "redact", "stages": ["output"]}
    no_weather = {"name": "blocklist", "terms": ["weather"], "stages": ["input"]}
    reasoner = lccore.load(dialogue_run.output_dir, ethics=[redact_paris, no_weather], audit_log=log).reasoner("generate")
    assert reasoner.answer("what is the capital of france?")["text"] == "<BLOCKED> is the capital of france."
    assert "".join(reasoner.stream("what is the capital of france?")) == "<BLOCKED> is the capital of france."
    answers = reasoner.answer_batch(["count to three", "how is the weather?"])
    assert answers[0]["text"] == "one two three." and answers[1]["refused"] and answers[1]["stage"] == "input"
    assert [piece["stage"] for piece in reasoner.stream("how is the weather?")] == ["input"]
    assert "capital of france" not in log.read_text() and {json.loads(line)["stage"] for line in log.read_text().splitlines()} == {"input", "output"}
    blocking = lccore.load(dialogue_run.output_dir, ethics=[{"name": "blocklist", "terms": ["paris"]}]).reasoner("generate")
    pieces = list(blocking.stream("what is the capital of france?"))
    assert len(pieces) == 1 and pieces[0]["refused"] and pieces[0]["stage"] == "output"


# --- the command line ---------------------------------------------------------------------------


def cli(capsys, *args):
    from lccore.cli import main

    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_stream_prints_the_same_text_as_a_plain_run(dialogue_run, capsys):
    run = str(dialogue_run.output_dir)
    status, plain, _ = cli(capsys, "generate", run, "--prompt", "hello", "--max-new-tokens", "20")
    assert status == 0 and plain == "hi there, how can i help?\n"
    status, streamed, _ = cli(capsys, "generate", run, "--prompt", "hello", "--max-new-tokens", "20", "--stream")
    assert status == 0 and streamed == plain
    status, guarded, _ = cli(capsys, "generate", run, "--prompt", "hello", "--max-new-tokens", "20", "--stream", "--policy", "pii", "--policy", "toxicity")
    assert status == 0 and guarded == plain
    status, out, _ = cli(capsys, "generate", run, "--prompt", "hello", "--json", "--stop", "how")
    assert status == 0 and json.loads(out) == {"text": "hi there, ", "tokens": json.loads(out)["tokens"], "prompt_tokens": json.loads(out)["prompt_tokens"], "finish_reason": "stop"}


def test_cli_input_file_gives_one_json_line_per_input(dialogue_run, tmp_path, capsys):
    inputs = write_jsonl(tmp_path / "in.jsonl", ["count to three", {"messages": CONVERSATIONS[0][:1]}])
    status, out, _ = cli(capsys, "generate", str(dialogue_run.output_dir), "--input", str(inputs))
    assert status == 0
    assert [json.loads(line)["text"] for line in out.splitlines()] == ["one two three.", "paris is the capital of france."]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", "hi", "--strategy", "beem"], "generate.strategy: expected one of greedy, beam, sample, prompt_lookup, got 'beem' (did you mean 'beam'?)"),
        (["--prompt", "hi", "--temperature", "0"], "generate: argument --temperature: must be at least 0.01, got 0"),
        (["--prompt", "hi", "--input", "x.jsonl"], "generate: give either --prompt TEXT or --input FILE.jsonl"),
        (["--prompt", "hi", "--stream", "--strategy", "beam"], "generate.strategy: beam search cannot stream"),
        (["--input", "BAD"], "bad.jsonl:2: malformed JSON"),
        (["--input", "WRONG"], "wrong.jsonl:1: expected a user message (a string), a list of messages or an object with 'messages'"),
    ],
)
def test_cli_bad_input_is_one_line(dialogue_run, tmp_path, capsys, args, message):
    (tmp_path / "bad.jsonl").write_text('"hello"\n{"messages": \n', encoding="utf-8")
    (tmp_path / "wrong.jsonl").write_text("42\n", encoding="utf-8")
    answered_first = "BAD" in args  # the row before the malformed one is answered and written before the error
    args = [str(tmp_path / f"{a.lower()}.jsonl") if a in ("BAD", "WRONG") else a for a in args]
    status, out, err = cli(capsys, "generate", str(dialogue_run.output_dir), *args)
    assert status == 2 and len(out.splitlines()) == answered_first
    assert len(err.strip().splitlines()) == 1 and err.startswith("lccore: error: ") and message in err


def test_cli_missing_run_is_one_line(tmp_path, capsys):
    status, _, err = cli(capsys, "generate", str(tmp_path / "nothing"), "--prompt", "hi")
    assert status == 2 and err.strip() == f"lccore: error: {tmp_path / 'nothing'}: no such run directory"


# --- sequence to sequence -----------------------------------------------------------------------


def translation_rows(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        words = [rng.choice(list(LEXICON)) for _ in range(rng.randint(2, 4))]
        rows.append({"source": " ".join(words), "target": " ".join(LEXICON[w] for w in words)})
    return rows


@pytest.fixture(scope="module")
def translation_run(t5_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("translation")
    config = {
        "model": t5_model,
        "task": {
            "name": "translation", "train": str(write_jsonl(folder / "train.jsonl", translation_rows(240, 1))),
            "test": str(write_jsonl(folder / "test.jsonl", translation_rows(30, 2))), "max_new_tokens": 12,
        },
        "optimizer": {"lr": 5e-3},
        "train": {"epochs": 15, "batch_size": 16, "max_length": 32, "seed": 0},
    }
    return lccore.train(config, folder / "run", progress=False)


def test_encoder_decoder_learns_to_translate_scored_by_sacrebleu(translation_run):
    saved = json.loads((translation_run.output_dir / "metrics.json").read_text())["test"]
    before, after = saved["before"], saved["after"]
    assert set(after) == {"bleu", "chrf", "loss"}
    assert after["bleu"] > before["bleu"] + 15 and after["chrf"] > before["chrf"] + 30
    assert after["loss"] < before["loss"]
    predictor = translation_run.load()
    assert predictor.task.encoder_decoder is True  # restored from the run, not guessed again
    assert predictor.predict(["dog sees cat"])[0]["text"].split()[0] == "hund"
    answer = generator(max_new_tokens=8).answer({"source": "dog sees cat"}, predictor=predictor)
    assert answer["text"].strip().split()[0] == "hund" and answer["finish_reason"] == "stop"


def test_decoder_only_seq2seq_learns_the_target_after_the_prompt(gpt2_model):
    import torch

    tokenizer = load_tokenizer(gpt2_model)
    task = lccore.Engine().create("task", "summarization", {"prefix": "summarize: ", "separator": "\nsummary:"})
    example = task.parse_input({"source": "the cat sat on the mat", "target": "a cat sat."}, "x:1")
    feature = task.encode([example], tokenizer, 64)[0]
    assert tokenizer.decode(feature["prompt"]) == "summarize: the cat sat on the mat\nsummary:"
    assert labelled_text(tokenizer, feature["labels"]) == f"a cat sat.{END}"
    assert feature["input_ids"][: len(feature["prompt"])] == feature["prompt"]
    short = task.parse_input({"source": "the cat", "target": "cat"}, "x:2")
    features = task.encode([example, short], tokenizer, 64)
    assert set(task.collate(features, tokenizer)) == {"input_ids", "attention_mask", "labels"}  # training: model inputs only
    with torch.inference_mode():
        batch = task.collate(features, tokenizer)
    mask = batch["prompt_attention_mask"]
    assert mask[1].tolist()[0] == 0 and mask[1].tolist()[-1] == 1  # prompts padded on the left for generation


def test_decoder_only_summarization_run_reports_rouge(gpt2_model, tmp_path):
    rows = [{"source": s, "target": s.split(" and ")[0]} for s in STORY] * 4
    data = write_jsonl(tmp_path / "sum.jsonl", rows)
    config = {
        "model": gpt2_model, "task": {"name": "summarization", "train": str(data), "test": str(data), "max_new_tokens": 8},
        "optimizer": {"lr": 5e-3}, "train": {"epochs": 1, "batch_size": 4, "max_length": 48},
    }
    metrics = lccore.train(config, tmp_path / "run", progress=False).metrics["test"]["after"]
    assert set(metrics) == {"rouge1", "rouge2", "rougeL", "loss"} and all(0.0 <= metrics[k] <= 1.0 for k in ("rouge1", "rouge2", "rougeL"))


def test_rouge_and_bleu_score_generated_text():
    from lccore_generation.seq2seq import Example

    summarization = lccore.Engine().create("task", "summarization", {})
    gold = [Example("x", "the cats sat on the mat", "x:1")]
    assert summarization.metrics([{"text": "the cat sat on the mat"}], gold)["rougeL"] == pytest.approx(1.0)  # stemmed
    assert summarization.metrics([{"text": "dogs bark"}], gold)["rouge1"] == 0.0
    translation = lccore.Engine().create("task", "translation", {})
    scores = translation.metrics([{"text": "the cats sat on the mat"}], gold)
    assert scores["bleu"] == pytest.approx(100.0) and scores["chrf"] == pytest.approx(100.0)


def test_label_smoothing_shifts_a_causal_lm_and_not_an_encoder_decoder(gpt2_model, t5_model):
    import torch

    for model_dir in (gpt2_model, t5_model):
        head = lccore.Engine().create("head", "generative_lm")
        model = head.build(model_dir, {})
        labels = torch.tensor([[5, 6, 7, 8, -100]])
        batch = {"input_ids": torch.tensor([[5, 6, 7, 8, 9]]), "attention_mask": torch.ones(1, 5, dtype=torch.long), "labels": labels}
        with torch.no_grad():
            outputs = model(**batch)
        head.label_smoothing = 1e-6  # smoothing so small that the loss must equal the model's own
        assert float(head.loss(outputs, batch)) == pytest.approx(float(outputs.loss), rel=1e-4)


def test_dialogue_refuses_an_encoder_decoder(t5_model):
    head = lccore.Engine().create("head", "generative_lm")
    with pytest.raises(lccore.ConfigError, match="is an encoder-decoder; this task fine-tunes a decoder-only"):
        head.build(t5_model, dialogue_task().head_spec())
    with pytest.raises(lccore.ConfigError, match="seq2seq_lm builds an encoder-decoder model; this task needs a decoder-only one"):
        lccore.Engine().create("head", "seq2seq_lm").build(t5_model, dialogue_task().head_spec())


def test_decoder_only_targets_need_an_end_of_text_token(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)  # a BERT vocabulary: padding, but no end-of-text token
    task = lccore.Engine().create("task", "summarization", {})
    example = task.parse_input({"source": "the cat sat on the mat", "target": "a cat"}, "row 1")
    with pytest.raises(lccore.ConfigError, match="has none"):
        task.encode([example], tokenizer, 32)


@pytest.mark.parametrize("flags", [["--prompt", "hi"], ["--prompt", "hi", "--stream"], ["--input", "-"]])
def test_generate_on_a_run_that_cannot_write_text_is_one_line(trained_run, capsys, monkeypatch, flags):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO('"hi"\n'))
    status, out, err = cli(capsys, "generate", str(trained_run.output_dir), *flags)
    assert status == 2 and out.strip() == ""
    assert err.strip().splitlines() == [f"lccore: error: {trained_run.output_dir}: a text_classification run's model does not generate text; "
                                        "generate needs a dialogue, summarization, translation or clm run"]
    with pytest.raises(lccore.ConfigError, match="does not generate text"):
        trained_run.load().reasoner("generate").answer("hi")
