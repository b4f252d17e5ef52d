"""Fine-tuning controls: freezing, gradual unfreezing, dropout overrides, layer-wise learning
rates, label smoothing, LoRA adapters with their export, and the adafactor optimiser."""

from __future__ import annotations

import copy

import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lccore
from lccore import finetuning
from lccore.cli import main as cli_main
from lccore.config import load_config
from conftest import ner_sentences, write_conll

TEXTS = ["superb film", "a dreadful book", "the meal was lovely", "really boring show"]


def with_train(config: dict, **train) -> dict:
    return {**config, "train": {**config["train"], **train}}


def build_classifier(tiny_model: str):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)


def run_config(tiny_model: str, **train):
    return load_config({"model": tiny_model, "task": "text_classification", "train": train})


def pretrained_weights(tiny_model: str) -> dict:
    return load_file(Path(tiny_model) / "model.safetensors")


def differs(before: dict, after: dict, prefix: str) -> list[bool]:
    """Per weight under ``prefix`` (names as the tiny checkpoint has them): changed or not."""
    names = [name for name in before if name.startswith(prefix)]
    assert names, prefix
    return [not torch.equal(before[name], after[name]) for name in names]


def snapshot(model) -> dict:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


# --- freezing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "freeze, trained, frozen",
    [
        ("head_only", [], ["bert.embeddings.", "bert.encoder."]),
        ({"strategy": "top_k", "k": 1}, ["bert.encoder.layer.1."], ["bert.embeddings.", "bert.encoder.layer.0."]),
        ("embeddings_frozen", ["bert.encoder.layer.0.", "bert.encoder.layer.1."], ["bert.embeddings."]),
    ],
)
def test_frozen_weights_stay_bit_identical(tiny_config, tmp_path, freeze, trained, frozen):
    run = lccore.train(with_train(tiny_config, epochs=1, freeze=freeze), tmp_path / "run", progress=False)
    before, after = pretrained_weights(tiny_config["model"]), load_file(run.model_dir / "model.safetensors")
    for prefix in frozen:
        assert not any(differs(before, after, prefix)), prefix
    for prefix in trained:
        assert any(differs(before, after, prefix)), prefix
    assert run.metrics["test"]["after"]["loss"] != run.metrics["test"]["before"]["loss"]  # the head trained


def trainable(model) -> set[str]:
    """Which parts train: 'head', 'pooler', 'layer.N', 'embeddings'."""
    parts = set()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            parts.add("head" if name.startswith("classifier") else "pooler" if ".pooler." in name else
                      "embeddings" if ".embeddings." in name else "layer." + name.split("encoder.layer.")[1].split(".")[0])
    return parts


def test_gradual_unfreezing_adds_one_layer_per_epoch(tiny_model):
    config = run_config(tiny_model, freeze="gradual")
    model = finetuning.prepare_model(build_classifier(tiny_model), config)
    assert trainable(model) == {"head"}
    expected = [{"head"}, {"head", "pooler", "layer.1"}, {"head", "pooler", "layer.1", "layer.0"},
                {"head", "pooler", "layer.1", "layer.0", "embeddings"}]
    for epoch, parts in enumerate(expected):
        finetuning.start_epoch(model, config, epoch)
        assert trainable(model) == parts, epoch
    # every parameter is in the optimiser from the start, so that one optimiser serves every epoch
    groups = finetuning.parameter_groups(model, config.optimizer)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_gradual_unfreezing_in_training(tiny_config, tmp_path):
    states = []
    observer = types.ModuleType("observer")
    observer.on_train_start = lccore.hookimpl(lambda run: states.append(snapshot(run.model)))
    observer.on_evaluate = lccore.hookimpl(lambda run, split: states.append(snapshot(run.model)) if split == "dev" else None)
    engine = lccore.Engine(plugins=[observer])
    lccore.train(with_train(tiny_config, epochs=2, freeze="gradual"), tmp_path / "run", engine=engine, progress=False)
    start, epoch1, epoch2 = states
    assert any(differs(start, epoch1, "classifier."))
    assert not any(differs(start, epoch1, "bert."))  # the first epoch trains the head only
    assert any(differs(epoch1, epoch2, "bert.encoder.layer.1.")) and any(differs(epoch1, epoch2, "bert.pooler."))
    assert not any(differs(start, epoch2, "bert.encoder.layer.0.")) and not any(differs(start, epoch2, "bert.embeddings."))


@pytest.mark.parametrize(
    "train, message",
    [
        ({"freeze": "top_k"}, r"train\.freeze\.k: required by strategy top_k"),
        ({"freeze": {"strategy": "top_k", "k": 3}}, r"train\.freeze\.k: 3 is more than the model's 2 layers"),
        ({"freeze": "gradual", "lora": {}}, r"train\.freeze\.strategy: 'gradual' cannot be combined with train\.lora"),
        ({"freeze": "head_only", "lora": {}}, r"train\.freeze\.strategy: 'head_only' cannot be combined with train\.lora"),
        ({"lora": {"target_modules": ["nonexistent"]}}, r"train\.lora\.target_modules: .*nonexistent"),
    ],
)
def test_bad_fine_tuning_settings_are_config_errors(tiny_model, train, message):
    with pytest.raises(lccore.ConfigError, match=message):
        finetuning.prepare_model(build_classifier(tiny_model), run_config(tiny_model, **train))


def test_strategies_that_need_a_backbone_say_so(tiny_model):
    from transformers import AutoModel

    stackless = torch.nn.Sequential(AutoModel.from_pretrained(tiny_model).embeddings, torch.nn.Linear(32, 2))
    with pytest.raises(lccore.ConfigError, match=r"train\.freeze\.strategy: the model holds no transformers PreTrainedModel"):
        finetuning.prepare_model(stackless, run_config(tiny_model, freeze="gradual"))


# --- dropout ------------------------------------------------------------------------------------


def forward_twice(model):
    batch = {"input_ids": torch.tensor([[2, 10, 11, 12, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    model.train()
    torch.manual_seed(0)
    first = model(**batch).logits
    second = model(**batch).logits
    return first, second


def test_dropout_override_sets_every_dropout_and_the_saved_config(tiny_model):
    first, second = forward_twice(build_classifier(tiny_model))
    assert not torch.equal(first, second)  # the tiny model's own dropout is 0.1
    model = finetuning.prepare_model(build_classifier(tiny_model), run_config(tiny_model, dropout={"hidden": 0.0, "attention": 0.0}))
    first, second = forward_twice(model)
    assert torch.equal(first, second)
    assert model.config.hidden_dropout_prob == 0.0 and model.config.attention_probs_dropout_prob == 0.0


def test_dropout_override_tells_attention_from_hidden_dropout(tiny_model):
    model = finetuning.prepare_model(build_classifier(tiny_model), run_config(tiny_model, dropout={"attention": 0.3}))
    probabilities = {name: module.p for name, module in model.named_modules() if isinstance(module, torch.nn.Dropout)}
    attention = {name for name in probabilities if name.endswith("attention.self.dropout")}
    assert len(attention) == 2
    assert all(p == 0.3 for name, p in probabilities.items() if name in attention)
    assert all(p == 0.1 for name, p in probabilities.items() if name not in attention)  # hidden: the model's own
    assert model.config.attention_probs_dropout_prob == 0.3 and model.config.hidden_dropout_prob == 0.1


# --- layer-wise learning rates ------------------------------------------------------------------


def test_layer_lr_decay_gives_each_depth_its_rate(tiny_model):
    import attrs

    model = build_classifier(tiny_model)
    optimizer_config = attrs.evolve(run_config(tiny_model).optimizer, lr=1.0, layer_lr_decay=0.5, weight_decay=0.01)
    groups = finetuning.parameter_groups(model, optimizer_config)
    group_of = {id(p): g for g in groups for p in g["params"]}
    assert len(group_of) == sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    expected = {"classifier.": 1.0, "bert.pooler.": 1.0, "bert.encoder.layer.1.": 0.5, "bert.encoder.layer.0.": 0.25, "bert.embeddings.": 0.125}
    for name, parameter in model.named_parameters():
        group = group_of[id(parameter)]
        assert group["lr"] == next(lr for prefix, lr in expected.items() if name.startswith(prefix)), name
        assert group["weight_decay"] == (0.0 if parameter.ndim < 2 or "LayerNorm" in name else 0.01), name
    assert groups[0]["lr"] == 1.0  # the loop logs the first group's rate: the head's

    plain = finetuning.parameter_groups(model, attrs.evolve(optimizer_config, layer_lr_decay=None))
    assert len(plain) == 2 and all("lr" not in g for g in plain)


# --- label smoothing ----------------------------------------------------------------------------


def smoothed_cross_entropy(logits, labels, epsilon):
    """(1 - e) * NLL(gold) + e * mean over classes of -log p, averaged over positions not -100."""
    log_probs = torch.log_softmax(logits.float(), dim=-1).view(-1, logits.shape[-1])
    labels = labels.view(-1)
    keep = labels != -100
    nll = -log_probs[keep].gather(1, labels[keep, None]).squeeze(1)
    uniform = -log_probs[keep].mean(dim=-1)
    return ((1 - epsilon) * nll + epsilon * uniform).mean()


def test_label_smoothing_loss_matches_the_formula():
    from transformers.modeling_outputs import TokenClassifierOutput

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4)
    labels = torch.tensor([[0, 3, -100, 1, 2], [-100, 2, 2, 0, -100]])
    unsmoothed = torch.nn.functional.cross_entropy(logits.view(-1, 4), labels.view(-1), ignore_index=-100)
    outputs = TokenClassifierOutput(loss=unsmoothed, logits=logits)
    head = lccore.Head()
    assert head.loss(outputs, {"labels": labels}) is unsmoothed
    head.label_smoothing = 0.2
    loss = head.loss(outputs, {"labels": labels})
    assert torch.allclose(loss, smoothed_cross_entropy(logits, labels, 0.2))
    assert not torch.allclose(loss, unsmoothed)


def test_span_qa_smooths_start_and_end(tiny_model):
    from lccore_extractive_qa.head import SpanQAHead

    head = SpanQAHead()
    model = head.build(tiny_model, {}).eval()
    batch = {"input_ids": torch.tensor([[2, 10, 11, 12, 13, 3]] * 2), "attention_mask": torch.ones(2, 6, dtype=torch.long),
             "start_positions": torch.tensor([1, 9]), "end_positions": torch.tensor([3, 9])}  # 9: outside, ignored
    outputs = model(**batch)
    assert head.loss(outputs, batch) is outputs.loss
    head.label_smoothing = 0.1
    loss = head.loss(outputs, batch)
    expected = (smoothed_cross_entropy(outputs.start_logits[:1], batch["start_positions"][:1], 0.1)
                + smoothed_cross_entropy(outputs.end_logits[:1], batch["end_positions"][:1], 0.1)) / 2
    assert torch.allclose(loss, expected)
    assert not torch.allclose(loss, outputs.loss)


def test_heads_without_cross_entropy_refuse_label_smoothing(tiny_model):
    from lccore_ner.crf import CRFHead
    from lccore_text_classification.head import SequenceClassifierHead

    config = load_config({"model": tiny_model, "task": "ner", "head": "crf", "train": {"label_smoothing": 0.1}})
    with pytest.raises(lccore.ConfigError, match=r"train\.label_smoothing: head 'crf' does not use a cross-entropy loss"):
        finetuning.check_head(CRFHead(), config)
    finetuning.check_head(SequenceClassifierHead(), config)


# --- LoRA ---------------------------------------------------------------------------------------


def in_memory_logits(records: list):
    """An observer that keeps the trained model's logits on TEXTS when training ends."""
    from transformers import AutoTokenizer

    def on_train_end(run):
        tokenizer = AutoTokenizer.from_pretrained(run.config.model)
        model = run.accelerator.unwrap_model(run.model).eval()
        with torch.no_grad():
            records.append(model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits)

    observer = types.ModuleType("lora_observer")
    observer.on_train_end = lccore.hookimpl(on_train_end)
    return observer


def loaded_logits(run_dir):
    predictor = lccore.load(run_dir)
    batch = predictor.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return predictor.model(**batch).logits


@pytest.fixture(scope="module")
def lora_run(tiny_config, tmp_path_factory):
    """A LoRA run without a dev set, so that its saved model is its final one; with the logits the
    trained model gave in memory."""
    records = []
    config = {**tiny_config, "task": {k: v for k, v in tiny_config["task"].items() if k != "dev"}, "optimizer": {"lr": 1e-2}}
    config = with_train(config, epochs=10, lora={})
    run = lccore.train(config, tmp_path_factory.mktemp("lora") / "run", engine=lccore.Engine(plugins=[in_memory_logits(records)]), progress=False)
    return run, records[0]


def test_lora_run_saves_an_adapter_that_reloads_exactly(lora_run, tiny_model):
    run, trained_logits = lora_run
    saved = sorted(p.name for p in run.model_dir.iterdir())
    assert "adapter_config.json" in saved and "adapter_model.safetensors" in saved and "model.safetensors" not in saved
    assert torch.allclose(loaded_logits(run.output_dir), trained_logits, atol=1e-6)
    assert run.metrics["test"]["after"]["accuracy"] >= 0.7  # from 0.5: the adapter and head learn

    model = lccore.load(run.output_dir).model
    bert = model.base_model.model.bert
    query = bert.encoder.layer[0].attention.self.query
    pretrained = pretrained_weights(tiny_model)
    assert torch.equal(query.base_layer.weight, pretrained["bert.encoder.layer.0.attention.self.query.weight"])
    assert torch.equal(bert.embeddings.word_embeddings.weight, pretrained["bert.embeddings.word_embeddings.weight"])
    assert query.lora_B["default"].weight.abs().sum() > 0  # the adapter trained (it starts at zero)


def test_export_merges_the_adapter_into_a_plain_run(lora_run, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    run, _ = lora_run
    out = tmp_path / "merged"
    assert cli_main(["export", str(run.output_dir), "--merge", "--output", str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "manifest.json", "metrics.json", "model"}
    assert (out / "model" / "model.safetensors").exists() and not (out / "model" / "adapter_config.json").exists()
    assert lccore.load_config(out / "config.yaml").train.lora is None

    lora_predictions, merged_predictions = lccore.load(run.output_dir).predict(TEXTS), lccore.load(out).predict(TEXTS)
    assert [p["label"] for p in merged_predictions] == [p["label"] for p in lora_predictions]
    assert [p["score"] for p in merged_predictions] == pytest.approx([p["score"] for p in lora_predictions], abs=1e-5)
    plain, info = AutoModelForSequenceClassification.from_pretrained(out / "model", output_loading_info=True)
    assert not info["missing_keys"]
    merged_query = plain.bert.encoder.layer[0].attention.self.query.weight
    assert not torch.equal(merged_query, pretrained_weights(run.config.model)["bert.encoder.layer.0.attention.self.query.weight"])

    assert cli_main(["export", str(run.output_dir), "--merge", "--output", str(out)]) == 2  # not empty
    assert cli_main(["export", str(run.output_dir), "--output", str(tmp_path / "x")]) == 2  # no --merge
    assert cli_main(["export", str(out), "--merge", "--output", str(tmp_path / "y")]) == 2  # not a LoRA run
    errors = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[0] for line in errors[-3:]] == ["lccore"] * 3
    assert "directory is not empty" in errors[-3] and "pass --merge" in errors[-2] and "not a LoRA run" in errors[-1]


def test_lora_on_a_token_classifier(tiny_model, tmp_path):
    data = {split: write_conll(tmp_path / f"{split}.conll", ner_sentences(count, seed)) for split, count, seed in (("train", 96, 1), ("test", 24, 3))}
    config = {"model": tiny_model, "task": {"name": "ner", **{k: str(v) for k, v in data.items()}},
              "optimizer": {"lr": 1e-2}, "train": {"epochs": 2, "batch_size": 16, "max_length": 32, "lora": {}}}
    run = lccore.train(config, tmp_path / "run", progress=False)
    assert (run.model_dir / "adapter_config.json").exists()
    reloaded, after = lccore.load(run.output_dir).evaluate(data["test"]), run.metrics["test"]["after"]
    assert (reloaded["f1"], reloaded["loss"]) == pytest.approx((after["f1"], after["loss"]))


@pytest.mark.parametrize("head_name", ["span_qa", "entity_marker_classifier", "crf"])
def test_lora_adapters_on_the_other_heads_save_and_reload(tiny_model, tmp_path, head_name):
    head = lccore.Engine().create("head", head_name, {})
    spec = {"labels": ["O", "B-PER", "I-PER"]}
    config = load_config({"model": tiny_model, "task": "ner", "train": {"lora": {}}})
    model = finetuning.prepare_model(head.build(tiny_model, spec), config)
    batch = {"input_ids": torch.tensor([[2, 10, 11, 12, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    if head_name == "entity_marker_classifier":
        batch.update(head_index=torch.tensor([1]), tail_index=torch.tensor([3]))
    with torch.no_grad():  # make the adapters and the head differ from a fresh build
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    model.eval()
    with torch.no_grad():
        trained = model(**batch)
    model.save_pretrained(tmp_path / "model")
    reloaded = finetuning.load_trained_model(head, config, spec, tmp_path / "model").eval()
    with torch.no_grad():
        again = reloaded(**batch)
    for key in ("logits", "start_logits", "end_logits", "tag_ids"):
        if getattr(trained, key, None) is not None:
            assert torch.allclose(trained[key].float(), again[key].float(), atol=1e-6), key


# --- adafactor ----------------------------------------------------------------------------------


def test_adafactor_trains_with_the_configured_rate(tiny_config, tmp_path):
    config = {**tiny_config, "optimizer": {"name": "adafactor", "lr": 1e-2, "warmup_ratio": 0.0}}
    run = lccore.train(config, tmp_path / "run", progress=False)
    losses = [row["loss"] for row in run.metrics["train"]]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert run.metrics["test"]["after"]["accuracy"] >= 0.8
    assert run.metrics["train"][0]["lr"] == pytest.approx(1e-2, rel=0.05)  # the configured rate, not Adafactor's own
    assert run.config.optimizer.options == {"clip_threshold": 1.0, "decay_rate": -0.8, "beta1": None, "scale_parameter": False}


def test_fine_tuning_guide_example_is_a_valid_config():
    import re

    import yaml

    guide = (Path(__file__).resolve().parents[1] / "docs" / "fine-tuning.md").read_text(encoding="utf-8")
    example = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", guide, flags=re.S)[0])
    config = load_config(example)
    assert config.train.freeze.strategy == "gradual" and config.optimizer.layer_lr_decay == 0.9
    command = re.findall(r"^lccore (export .*)$", guide, flags=re.M)[0].split()
    from lccore.cli import build_parser

    assert build_parser().parse_args(command).merge is True


@pytest.mark.parametrize("head_name", ["sequence_classifier", "mean_pooled_classifier"])
def test_gradient_checkpointing_recomputes_layers_and_leaves_the_losses_alone(tiny_config, tmp_path, head_name):
    """Issue 20: train.gradient_checkpointing on a Hugging Face model and on a head built around
    one (BackboneWithHead), with and without LoRA: each layer runs again in the backward pass, and
    the losses step by step are those of a run without it (no dropout)."""
    import torch

    runs = {}
    for checkpointing in (False, True):
        config = copy.deepcopy(tiny_config)
        config["head"] = head_name
        config["train"].update(epochs=1, dropout={"hidden": 0.0, "attention": 0.0}, gradient_checkpointing=checkpointing)
        runs[checkpointing] = lccore.train(config, tmp_path / f"{head_name}-{checkpointing}", progress=False)
    losses = {key: [row["loss"] for row in run.metrics["train"]] for key, run in runs.items()}
    assert len(losses[True]) >= 5 and losses[True] == pytest.approx(losses[False], rel=1e-4, abs=1e-6)
    assert load_config(runs[True].output_dir / "config.yaml").train.gradient_checkpointing is True

    for lora in (None, {}):
        config = load_config({"model": tiny_config["model"], "task": "text_classification", "head": head_name,
                              "train": {"gradient_checkpointing": True, "lora": lora}})
        head = lccore.Engine().create("head", head_name, {})
        model = finetuning.prepare_model(head.build(tiny_config["model"], {"labels": ["a", "b"]}), config)
        layer = next(m for name, m in model.named_modules() if name.endswith("layer.0.attention"))
        calls = []
        layer.register_forward_pre_hook(lambda *args: calls.append(1))
        model.train()
        batch = {"input_ids": torch.tensor([[2, 10, 11, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
        outputs = model(**batch)
        logits = outputs["logits"] if isinstance(outputs, dict) or hasattr(outputs, "keys") else outputs.logits
        logits.sum().backward()
        assert len(calls) == 2, (lora, calls)  # forward, then again in the backward pass
