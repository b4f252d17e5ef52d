"""One chat template from training to serving (issue 21): a dialogue run records the template it
trained with and its end-of-turn token; loading refuses a run whose tokenizer renders otherwise;
generation stops at the end-of-turn token even when it is not the model's end-of-text; training
shows the supervised share and a decoded example first."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys

import pytest

import lccore
from conftest import CONVERSATIONS, END, byte_level_bpe, write_jsonl

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
QUESTION = [{"role": "user", "content": "what is the capital of france?"}]


@pytest.fixture(scope="module")
def chatml_run(tmp_path_factory):
    """A 2-layer GPT-2 whose tokenizer has a ChatML template: a turn ends with <|im_end|>, and the
    model's end-of-text is another token; fine-tuned until it knows the replies by heart."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("chatml")
    specials = [END, "<|im_start|>", "<|im_end|>"]
    texts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for c in CONVERSATIONS for m in c]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=byte_level_bpe(texts, specials, 600), bos_token=END, eos_token=END, unk_token=END,
                                        pad_token=END, additional_special_tokens=specials[1:], model_input_names=["input_ids", "attention_mask"])
    tokenizer.chat_template = CHATML
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=256, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder / "gpt2")
    tokenizer.save_pretrained(folder / "gpt2")
    data = write_jsonl(folder / "chat.jsonl", [{"messages": c} for c in CONVERSATIONS * 8])
    config = {"model": str(folder / "gpt2"), "task": {"name": "dialogue", "train": str(data)}, "optimizer": {"lr": 5e-3},
              "train": {"epochs": 40, "batch_size": 8, "max_length": 64, "seed": 0}}
    return lccore.train(config, folder / "run", progress=False)


def test_the_run_records_its_template_and_end_of_turn_token(chatml_run, dialogue_run):
    from lccore_generation.dialogue import DEFAULT_TEMPLATE

    import hashlib

    recorded = json.loads((chatml_run.output_dir / "manifest.json").read_text())["tokenizer"]
    assert recorded["end_of_turn"] == "<|im_end|>"
    assert recorded["chat_template"] == {"source": "tokenizer", "text": CHATML, "sha256": hashlib.sha256(CHATML.encode()).hexdigest()}
    plain = json.loads((dialogue_run.output_dir / "manifest.json").read_text())["tokenizer"]
    assert plain["chat_template"]["source"] == "lccore default" and plain["chat_template"]["text"] == DEFAULT_TEMPLATE and plain["end_of_turn"] == END


def test_generation_stops_at_the_end_of_turn_token(chatml_run):
    """The model's end-of-text is not <|im_end|>: without the recorded end-of-turn token,
    generation runs on past the reply until max_new_tokens."""
    chat = lccore.load(chatml_run.output_dir, device="cpu")
    generate = chat.reasoner("generate", max_new_tokens=40)
    answer = generate.answer(QUESTION)
    assert answer["text"] == "paris is the capital of france." and answer["finish_reason"] == "stop" and answer["tokens"] < 40
    assert chat.predict(["count to three"])[0]["reply"] == "one two three."
    assert "".join(generate.stream(QUESTION)) == "paris is the capital of france."

    chat.task.end_token_ids = lambda tokenizer: []  # what generation did before the end of turn was known
    runaway = chat.reasoner("generate", max_new_tokens=40).answer(QUESTION)
    assert runaway["tokens"] == 40 and runaway["finish_reason"] == "length"  # (the special tokens it wrote on are not shown)


def test_served_chat_completions_render_with_the_trained_template(chatml_run):
    openai = pytest.importorskip("openai")
    import httpx
    from lccore_serve.app import create_app

    app = create_app({"chat": lccore.load(chatml_run.output_dir, device="cpu")})

    async def ask():
        client = openai.AsyncOpenAI(api_key="x", base_url="http://serve/v1", max_retries=0,
                                    http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve"))
        whole = await client.chat.completions.create(model="chat", messages=QUESTION, max_tokens=40)
        chunks = [c async for c in await client.chat.completions.create(model="chat", messages=QUESTION, max_tokens=40, stream=True,
                                                                           stream_options={"include_usage": True})]
        return whole, chunks

    whole, chunks = asyncio.run(ask())
    assert whole.choices[0].message.content == "paris is the capital of france." and whole.choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens < 40


def test_a_run_whose_tokenizer_template_changed_is_refused(chatml_run, tmp_path):
    copy = tmp_path / "edited"
    shutil.copytree(chatml_run.output_dir, copy)
    config_file = copy / "model" / "tokenizer_config.json"
    template_file = copy / "model" / "chat_template.jinja"
    if template_file.is_file():  # transformers 5 keeps the template beside the config
        template_file.write_text(CHATML.replace("'\n'", "'\n\n'"))
    else:
        settings = json.loads(config_file.read_text())
        settings["chat_template"] = CHATML.replace("'\n'", "'\n\n'")
        config_file.write_text(json.dumps(settings))
    with pytest.raises(lccore.ConfigError, match=r"model: the tokenizer's chat template \(sha256 [0-9a-f]{12}\) is not the one the run was trained with \(sha256 [0-9a-f]{12}"):
        lccore.load(copy, device="cpu")
    result = subprocess.run([sys.executable, "-m", "lccore", "generate", str(copy), "--prompt", "hello"], capture_output=True, text=True,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "chat template" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_template_added_to_a_run_that_trained_with_the_default_is_refused_as_a_change(dialogue_run, tmp_path):
    """A run trained with lccore's default template (its tokenizer had none) given a template that
    training would refuse (no end token after a reply): refused as a changed tokenizer, not with
    training's advice alone; and a manifest whose recorded template was edited is named as such."""
    copy = tmp_path / "given-a-template"
    shutil.copytree(dialogue_run.output_dir, copy)
    (copy / "model" / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(lccore.ConfigError, match=r"model: the tokenizer is not the one the run was trained with \(task.template: .*no special token"):
        lccore.load(copy, device="cpu")
    edited = tmp_path / "manifest-edited"
    shutil.copytree(dialogue_run.output_dir, edited)
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest["tokenizer"]["chat_template"]["text"] += "{{ '' }}"  # the hash kept: the record contradicts itself
    (edited / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(lccore.ConfigError, match=r"model: the tokenizer's chat template differs from the one kept in manifest.json \(whose record was edited\)"):
        lccore.load(edited, device="cpu")


def test_training_shows_the_supervised_share_and_a_decoded_conversation(chatml_run, tmp_path, capsys):
    data = write_jsonl(tmp_path / "chat.jsonl", [{"messages": c} for c in CONVERSATIONS])
    config = {"model": str(chatml_run.output_dir / "model"), "task": {"name": "dialogue", "train": str(data)}, "train": {"max_steps": 1, "batch_size": 4, "max_length": 64}}
    lccore.train(config, tmp_path / "run", progress=True)
    out = capsys.readouterr().out
    assert "tokens (" in out and "are supervised" in out and "its last reply ends with the supervised end-of-turn token '<|im_end|>'" in out
    assert "[[<|im_start|>user\nwhat is the capital of france?<|im_end|>\n<|im_start|>assistant\n]]paris is the capital of france.<|im_end|>" in out
    assert "warning" not in out
    # Replies longer than max_length lose their end token: said with how many, before training.
    lccore.train({**config, "train": {**config["train"], "max_length": 10}}, tmp_path / "short", progress=True)
    out = capsys.readouterr().out
    assert "its last reply does NOT end with" in out
    cut = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert len(cut) == 1 and f"of these {len(CONVERSATIONS)} conversations lose the end of their last reply to train.max_length (10 tokens kept)" in cut[0], out


def test_a_template_without_an_end_of_turn_token_is_refused_before_training(chatml_run, tmp_path):
    from transformers import AutoTokenizer

    model = tmp_path / "model"
    shutil.copytree(chatml_run.output_dir / "model", model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
    tokenizer.save_pretrained(model)
    data = write_jsonl(tmp_path / "chat.jsonl", [{"messages": c} for c in CONVERSATIONS])
    with pytest.raises(lccore.ConfigError, match="puts no special token after an assistant's reply"):
        lccore.train({"model": str(model), "task": {"name": "dialogue", "train": str(data)}, "train": {"max_steps": 1}}, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "model").exists()
