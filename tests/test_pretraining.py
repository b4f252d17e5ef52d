"""Pretraining (mlm, clm) from scratch and continued, the joint objective, continual fine-tuning."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import write_jsonl

import lccore
from lccore.cli import main

POSITIVE = "great wonderful superb lovely brilliant delightful charming excellent marvelous splendid terrific fantastic".split()
NEGATIVE = "awful terrible boring dreadful horrible dull dismal tedious atrocious lousy painful bland".split()
THINGS = "film book meal show play song trip game".split()
TEMPLATES = ["the {t} was {a} and {b} .", "what a {a} {t} , truly {b} .", "i found the {t} {a} , even {b} .", "such a {a} and {b} {t} ."]


def corpus(count: int, seed: int) -> list[str]:
    """Sentences where words of one polarity occur together: what a masked LM can learn."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        a, b = rng.sample(rng.choice([POSITIVE, NEGATIVE]), 2)
        lines.append(rng.choice(TEMPLATES).format(t=rng.choice(THINGS), a=a, b=b))
    return lines


def reviews(count: int, seed: int, positive: list[str], negative: list[str]) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = "positive" if i % 2 == 0 else "negative"
        word = rng.choice(positive if label == "positive" else negative)
        rows.append({"text": f"the {rng.choice(THINGS)} was {word} .", "label": label})
    return rows


TINY_BERT = {"architecture": "bert", "hidden_size": 64, "num_layers": 2, "num_heads": 2, "vocab_size": 200}


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "train.txt").write_text("\n".join(corpus(3000, seed=0)) + "\n", encoding="utf-8")
    (folder / "dev.txt").write_text("\n".join(corpus(200, seed=1)) + "\n", encoding="utf-8")
    # Fine-tuning sees four words of each polarity; its test only the eight others.
    write_jsonl(folder / "cls_train.jsonl", reviews(160, 2, POSITIVE[:4], NEGATIVE[:4]))
    write_jsonl(folder / "cls_dev.jsonl", reviews(40, 3, POSITIVE[:4], NEGATIVE[:4]))
    write_jsonl(folder / "cls_test.jsonl", reviews(80, 4, POSITIVE[4:], NEGATIVE[4:]))
    return {p.stem: p for p in folder.iterdir()}


@pytest.fixture(scope="module")
def pretrained(texts, tmp_path_factory):
    config = {
        "model": TINY_BERT,
        "task": {"name": "mlm", "train": str(texts["train"]), "dev": str(texts["dev"])},
        "optimizer": {"lr": 2e-3},
        "train": {"epochs": 10, "batch_size": 32, "max_length": 64},
    }
    return lccore.train(config, tmp_path_factory.mktemp("pretrain") / "run", progress=False)


def classification(model, texts) -> dict:
    return {
        "model": model,
        "task": {"name": "text_classification", **{split: str(texts[f"cls_{split}"]) for split in ("train", "dev", "test")}},
        "optimizer": {"lr": 3e-3},
        "train": {"epochs": 8, "batch_size": 16, "max_length": 32},
    }


def test_mlm_from_scratch_lowers_perplexity_and_saves_a_plain_model_with_its_tokenizer(pretrained):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    perplexities = [row["perplexity"] for row in pretrained.metrics["dev"]]
    assert len(perplexities) == 10
    assert perplexities[-1] < 0.5 * perplexities[0]
    assert pretrained.metrics["best"]["metric"] == "perplexity"
    tokenizer = AutoTokenizer.from_pretrained(pretrained.model_dir)  # trained on the corpus
    assert tokenizer.tokenize("the film was splendid")[-1] == "splendid"
    assert len(tokenizer) <= 200
    model = AutoModelForMaskedLM.from_pretrained(pretrained.model_dir)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    saved = yaml.safe_load((pretrained.output_dir / "config.yaml").read_text())
    assert saved["model"]["architecture"] == "bert" and saved["head"]["name"] == "masked_lm"


def word_order_rows(count: int, seed: int) -> list[dict]:
    """A small task that needs what pretraining teaches: is this sentence fluent or scrambled?"""
    rng = random.Random(seed)
    rows = []
    for i, sentence in enumerate(corpus(count, seed)):
        words = sentence.split()
        if i % 2:
            rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": "scrambled" if i % 2 else "fluent"})
    return rows


def test_pretrained_model_fine_tunes_better_than_the_same_architecture_from_random_weights(pretrained, tmp_path):
    random_init = {**TINY_BERT, "tokenizer": str(pretrained.model_dir)}  # same tokenizer, random weights
    scores = {"pretrained": [], "random": []}
    for seed in (5, 15, 25):  # three small labelled samples: 48 examples to learn from
        files = {
            split: str(write_jsonl(tmp_path / f"{split}-{seed}.jsonl", word_order_rows(count, seed + offset)))
            for split, count, offset in (("train", 48, 0), ("dev", 40, 1), ("test", 200, 2))
        }
        for name, model in (("pretrained", str(pretrained.model_dir)), ("random", random_init)):
            config = {
                "model": model, "task": {"name": "text_classification", **files},
                "optimizer": {"lr": 1e-3}, "train": {"epochs": 10, "batch_size": 8, "max_length": 32},
            }
            if name == "random":  # the same head for both; the pretrained model gets it by default (below)
                config["head"] = "mean_pooled_classifier"
            run = lccore.train(config, tmp_path / f"{name}-{seed}", progress=False)
            # masked LM alone leaves [CLS] untrained: a model an lccore mlm run made gets the head
            # that reads the mean of the token states, as the README's two commands do
            assert run.config.head.name == "mean_pooled_classifier"
            scores[name].append(run.metrics["test"]["after"]["accuracy"])
    mean = {name: sum(values) / len(values) for name, values in scores.items()}
    assert mean["pretrained"] >= mean["random"] + 0.1, scores


def test_the_default_head_follows_how_an_lccore_run_made_the_model(pretrained, tiny_model, sentiment_files, tmp_path, capsys):
    files = {"train": str(sentiment_files["train"]), "dev": str(sentiment_files["dev"])}
    base = {"task": {"name": "text_classification", **files}, "train": {"max_steps": 1, "batch_size": 8, "max_length": 32}}
    run = lccore.train({**base, "model": str(pretrained.model_dir)}, tmp_path / "from-mlm", progress=False)
    assert run.config.head.name == "mean_pooled_classifier"
    assert yaml.safe_load((run.output_dir / "config.yaml").read_text())["head"]["name"] == "mean_pooled_classifier"  # recorded
    assert f"head: mean_pooled_classifier (the model was made by a 'mlm' run, {pretrained.model_dir}" in capsys.readouterr().err
    named = lccore.train({**base, "model": str(pretrained.model_dir), "head": "sequence_classifier"}, tmp_path / "named", progress=False)
    assert named.config.head.name == "sequence_classifier"  # a head the config names is kept
    other = lccore.train({**base, "model": tiny_model}, tmp_path / "other", progress=False)
    assert other.config.head.name == "sequence_classifier"  # a model lccore did not make: the task's usual head


@pytest.mark.parametrize("architecture", ["bert", "gpt2"])
def test_tokenizers_trained_from_scratch_are_the_same_every_time(architecture):
    # tokenizers numbers WordPiece's "##x" pieces in hash order (huggingface/tokenizers#1794):
    # without our fixed order, retraining on the same corpus gave other ids and other merges.
    from lccore.config import ScratchModelConfig
    from lccore.scratch import train_tokenizer

    texts = corpus(400, seed=0)
    spec = ScratchModelConfig(architecture=architecture, vocab_size=200)
    trained = {train_tokenizer(spec, texts).backend_tokenizer.to_str() for _ in range(6)}
    assert len(trained) == 1
    tokenizer = train_tokenizer(spec, texts)
    if architecture == "bert":  # the pieces are ordinary vocabulary, not special tokens
        assert tokenizer.all_special_tokens == ["[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"] and any(t.startswith("##") for t in tokenizer.get_vocab())
    assert tokenizer.decode(tokenizer("the films were great")["input_ids"], skip_special_tokens=True) == "the films were great"


def test_a_model_built_from_scratch_is_written_by_any_process_of_a_launch(tmp_path, monkeypatch):
    """transformers writes models only from global rank 0 under torch.distributed; the process
    that builds a scratch model into the shared cache (whichever takes the lock) may be rank 1."""
    import transformers.distributed.mixin as mixin
    from transformers import AutoModelForMaskedLM

    from lccore.config import ScratchModelConfig
    from lccore.scratch import build

    monkeypatch.setattr(mixin, "_is_torch_distributed_initialized", lambda: True)
    monkeypatch.setattr(mixin, "_get_torch_distributed_rank", lambda: 1)
    folder = build(ScratchModelConfig(architecture="bert", vocab_size=200, hidden_size=32, num_layers=1, num_heads=2),
                   corpus(200, seed=0), tmp_path / "scratch", max_length=32, seed=0)
    assert AutoModelForMaskedLM.from_pretrained(folder).config.hidden_size == 32


def test_clm_from_scratch_packs_blocks_and_scores_each_text(texts, tmp_path):
    config = {
        "model": {**TINY_BERT, "architecture": "gpt2", "vocab_size": 300},
        "task": {"name": "clm", "train": str(texts["train"]), "dev": str(texts["dev"])},
        "optimizer": {"lr": 3e-3},
        "train": {"epochs": 2, "batch_size": 16, "max_length": 64},
    }
    run = lccore.train(config, tmp_path / "gpt", progress=False)
    perplexities = [row["perplexity"] for row in run.metrics["dev"]]
    assert perplexities[-1] < perplexities[0]

    predictor = run.load()
    good, scrambled = predictor.predict(["the film was great and superb .", ". superb film and the great was"])
    assert good["tokens"] > 0 and good["perplexity"] < scrambled["perplexity"]
    # Packing: every training block but the file's last is exactly max_length tokens long, and
    # every token (with its text's end-of-text token) belongs to its text, once.
    examples = list(predictor.task.read(texts["train"]))
    features = predictor.task.encode(examples, predictor.tokenizer, 64)
    assert {len(f["input_ids"]) for f in features[:-1]} == {64}
    counts = {}
    for feature in features:
        for index, start, end in feature["segments"]:
            counts[index] = counts.get(index, 0) + end - start
    lengths = [len(ids) + 1 for ids in predictor.tokenizer([e.text for e in examples], add_special_tokens=False)["input_ids"]]
    assert [counts[i] for i in range(len(lengths))] == lengths


def test_mlm_masks_are_fresh_in_training_and_fixed_in_evaluation(pretrained):
    import torch

    predictor = pretrained.load()
    task, tokenizer = predictor.task, predictor.tokenizer
    features = task.encode(list(task.read(pretrained.config.task.dev))[:20], tokenizer, 64)
    first, second = task.collate(features, tokenizer), task.collate(features, tokenizer)
    assert not torch.equal(first["labels"], second["labels"])  # dynamic masking
    with torch.inference_mode():
        first, second = task.collate(features, tokenizer), task.collate(features, tokenizer)
        alone = task.collate(features[:1], tokenizer)
    assert torch.equal(first["labels"], second["labels"])
    width = alone["labels"].shape[1]
    assert torch.equal(first["labels"][0, :width], alone["labels"][0])  # whatever the batch
    selected = first["labels"] != -100
    assert 0.08 < selected.float().sum() / first["attention_mask"].sum() < 0.25  # about 15%
    assert not torch.isin(first["labels"][selected], torch.tensor(tokenizer.all_special_ids)).any()


def test_continued_pretraining_from_an_existing_model(tiny_model, texts, tmp_path):
    config = {"model": tiny_model, "task": {"name": "mlm", "train": str(texts["dev"]), "dev": str(texts["dev"])}, "train": {"epochs": 1}}
    run = lccore.train(config, tmp_path / "continued", progress=False)
    assert run.metrics["dev"][0]["perplexity"] > 0
    assert (run.model_dir / "tokenizer.json").is_file()


def test_joint_objective_logs_both_losses_trains_the_lm_term_and_saves_only_the_task_model(pretrained, texts, tmp_path):
    from safetensors.torch import load_file

    plain = lccore.train(classification(str(pretrained.model_dir), texts), tmp_path / "plain", progress=False)
    config = classification(str(pretrained.model_dir), texts)
    config["train"]["aux_lm_weight"] = 0.5
    joint = lccore.train(config, tmp_path / "joint", progress=False)
    last = joint.metrics["train"][-1]
    assert last["loss"] == pytest.approx(last["task_loss"] + 0.5 * last["lm_loss"], rel=1e-4)
    assert load_file(joint.model_dir / "model.safetensors").keys() == load_file(plain.model_dir / "model.safetensors").keys()

    # The LM term is optimised too: its loss on the task's own texts falls during the run.
    lm_losses = [row["lm_loss"] for row in joint.metrics["train"]]
    assert sum(lm_losses[-5:]) < sum(lm_losses[:5])


def test_init_from_continues_a_run_with_replay_and_reports_its_old_test_set(pretrained, texts, tmp_path):
    first = lccore.train(classification(str(pretrained.model_dir), texts), tmp_path / "first", progress=False)
    new_data = write_jsonl(tmp_path / "new.jsonl", reviews(60, 9, POSITIVE[4:], NEGATIVE[4:]))
    config = {
        "model": "unused: init_from replaces it",
        "task": {"name": "text_classification", "train": str(new_data)},
        "optimizer": {"lr": 3e-3},
        "train": {"epochs": 2, "batch_size": 16, "max_length": 32, "init_from": str(first.output_dir), "replay": 0.25},
    }
    second = lccore.train(config, tmp_path / "second", progress=False)
    old = second.metrics["previous_test"]
    assert old["before"]["accuracy"] == pytest.approx(first.metrics["test"]["after"]["accuracy"])  # same model, same file
    assert "after" in old
    assert len(second.metrics["train"]) == 2 * -(-(60 + 40) // 16)  # 40 replayed = 25% of 160
    manifest = json.loads((second.output_dir / "manifest.json").read_text())
    assert manifest["data"]["previous_test"]["path"] == str(texts["cls_test"])
    # the weights came from the first run: that is what the manifest and config.yaml record, not the ignored `model:`
    assert manifest["model"] == str(first.output_dir / "model")
    assert yaml.safe_load((second.output_dir / "config.yaml").read_text())["model"] == str(first.output_dir / "model")

    # `model:` is not needed with --init-from
    path = tmp_path / "more.yaml"
    path.write_text(yaml.safe_dump({"task": config["task"], "train": {"epochs": 1, "batch_size": 16, "max_length": 32}}))
    assert main(["train", str(path), "--output", str(tmp_path / "third"), "--init-from", str(first.output_dir), "-q"]) == 0
    assert json.loads((tmp_path / "third" / "manifest.json").read_text())["model"] == str(first.output_dir / "model")
    with pytest.raises(lccore.ConfigError, match="model: missing required key"):  # without it, model stays required
        lccore.load_config(path)


def test_pretrain_cli_refuses_a_task_that_is_not_language_modelling(texts, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": TINY_BERT, "task": {"name": "text_classification", "train": str(texts["cls_train"])}}))
    result = subprocess.run([sys.executable, "-m", "lccore", "pretrain", str(path), "--output", str(tmp_path / "x")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "not a language-modelling task" in result.stderr and "Traceback" not in result.stderr
    path.write_text(yaml.safe_dump({"model": TINY_BERT, "task": {"name": "clm", "train": str(texts["train"])}}))
    result = subprocess.run([sys.executable, "-m", "lccore", "pretrain", str(path), "--output", str(tmp_path / "y")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "model.architecture: bert pretrains with mlm, not with task 'clm'" in result.stderr
