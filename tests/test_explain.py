"""Explainers (plugin `explain`): the attribution record, sub-token aggregation, integrated
gradients' completeness, faithfulness against random, the CLI, and the training probe."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import pytest

import lccore
from conftest import NEGATIVE, POSITIVE, write_jsonl
from conftest import FROM_SCRATCH_SCHEDULE, ner_sentences, write_conll

EXPLAINERS = ["shap", "integrated_gradients", "attention", "random"]
SENTIMENT = set(POSITIVE + NEGATIVE)


@pytest.fixture(scope="module")
def ner_predictor(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("explain-ner")
    config = {
        "model": tiny_model,
        "task": {"name": "ner", "train": str(write_conll(folder / "train.conll", ner_sentences(150, 1)))},
        "optimizer": {"lr": 3e-3, **FROM_SCRATCH_SCHEDULE},
        "train": {"epochs": 8, "batch_size": 16, "max_length": 32, "seed": 3},
    }
    return lccore.train(config, folder / "run", progress=False).load()


@pytest.fixture(scope="module")
def predictor(trained_run):
    return lccore.load(trained_run.output_dir)


@pytest.fixture(scope="module")
def test_texts(sentiment_files):
    return [json.loads(line)["text"] for line in sentiment_files["test"].read_text().splitlines()]


@pytest.fixture(scope="module")
def test_records(predictor, test_texts):
    """Each explainer's records for the 40 test texts, computed once."""
    return {name: predictor.explain(test_texts, name) for name in ("shap", "integrated_gradients", "random")}


def check_record(record: dict, text: str, evaluated: bool = True) -> None:
    assert record["text"] == text
    assert json.loads(json.dumps(record)) == record  # JSON-serialisable as is
    previous_end = 0
    for word in record["words"]:
        assert text[word["start"] : word["end"]] == word["text"] and word["text"].strip() == word["text"] != ""
        assert word["start"] >= previous_end  # in order, not overlapping
        previous_end = word["end"]
    for index, word in enumerate(record["words"]):  # a word's score is the sum of its sub-tokens'
        pieces = [t["score"] for t in record["tokens"] if t["word"] == index]
        assert pieces and word["score"] == pytest.approx(sum(pieces), abs=1e-6)
    assert (record["cost"]["model_evaluations"] >= 1) == evaluated


@pytest.mark.parametrize("name", EXPLAINERS)
def test_every_explainer_scores_each_word_once_with_offsets_into_the_text(predictor, name):
    texts = ["the film was great, and the plot dull!", "great", "alice lives in boston"]
    records = predictor.explain(texts, name)
    assert [r["text_index"] for r in records] == [0, 1, 2]
    for record, text in zip(records, texts):
        check_record(record, text)
        assert record["method"] == name and record["target"] == {"label": record["prediction"]["label"]}
    assert [w["text"] for w in records[0]["words"]] == ["the", "film", "was", "great", ",", "and", "the", "plot", "dull", "!"]
    assert [w["text"] for w in records[2]["words"]] == ["alice", "lives", "in", "boston"]
    if name == "shap":  # one word: Partition SHAP cannot cluster it (shap#3515); the exact value is used
        one = records[1]
        assert any("shap#3515" in note for note in one["notes"])
        assert one["words"][0]["score"] == pytest.approx(one["target_score"] - one["details"]["base_value"], abs=1e-5)
    if name == "attention":
        assert any("not a faithful explanation" in note for note in records[0]["notes"])


def test_a_word_of_two_word_pieces_gets_the_sum_of_their_scores(predictor):
    from lccore_explain.record import aggregate

    words = [(0, 5), (6, 12)]  # "alice boston", boston = bos + ##ton
    scores, owners = aggregate([None, (0, 5), (6, 9), (9, 12), None], [9.0, 0.5, 0.25, 0.125, 9.0], words)
    assert scores == [0.5, 0.375] and owners == [None, 0, 1, 1, None]

    record = predictor.explain(["alice lives in boston"], "integrated_gradients")[0]
    boston = [t for t in record["tokens"] if t["word"] == 3]
    assert [t["text"] for t in boston] == ["bos", "ton"]
    assert record["words"][3]["score"] == pytest.approx(boston[0]["score"] + boston[1]["score"], abs=1e-7)
    assert boston[0]["score"] != 0 and boston[1]["score"] != 0


def test_integrated_gradients_is_complete_and_reports_its_convergence_delta(predictor):
    import torch

    text = "the plot was lovely and the acting dull"
    record = predictor.explain([text], "integrated_gradients", n_steps=64, internal_batch_size=7)[0]
    details = record["details"]
    total = sum(w["score"] for w in record["words"])
    assert details["f_input"] == pytest.approx(record["prediction"]["score"], abs=1e-5)
    assert total == pytest.approx(details["f_input"] - details["f_baseline"], abs=2e-3)
    assert abs(details["convergence_delta"]) < 2e-3
    assert record["cost"] == {**record["cost"], "model_evaluations": 64 + 2, "gradient_evaluations": 64}

    # f(baseline) is the model's probability with [PAD] at every non-special position.
    tokenizer = predictor.tokenizer
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    ids[0, 1:-1] = tokenizer.pad_token_id
    with torch.no_grad():
        probabilities = predictor.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.softmax(-1)[0]
    label = predictor.task.labels.index(record["target"]["label"])
    assert details["f_baseline"] == pytest.approx(float(probabilities[label]), abs=1e-5)


def test_integrated_gradients_adds_points_until_it_converges(predictor):
    """Issue 18: the tutorial's settings warned "convergence delta is large"; too few points are
    now doubled until the attributions sum to f(input) - f(baseline), up to max_n_steps."""
    text = "the plot was lovely and the acting dull"
    fixed = predictor.explain([text], "integrated_gradients", n_steps=1, max_n_steps=1)[0]
    assert fixed["details"]["n_steps"] == 1 and any("convergence delta" in note for note in fixed["notes"])  # what a fixed budget gave
    adaptive = predictor.explain([text], "integrated_gradients", n_steps=1, max_n_steps=256)[0]
    details = adaptive["details"]
    assert 1 < details["n_steps"] <= 256 and not any("convergence delta" in note for note in adaptive["notes"])
    assert abs(details["convergence_delta"]) <= max(0.01, 0.05 * abs(details["f_input"] - details["f_baseline"]))
    assert adaptive["cost"]["gradient_evaluations"] == sum(2**k for k in range(details["n_steps"].bit_length()))  # 1 + 2 + 4 + ...


def test_the_sentiment_word_gets_the_top_attribution(test_records):
    # The tiny model decides by the sentiment word; it leans on positive words most (negative is
    # its default), so every positive prediction must be explained by its positive word.
    for name in ("shap", "integrated_gradients"):
        tops = [max(r["words"], key=lambda w: w["score"])["text"] for r in test_records[name]]
        positive = [top for top, r in zip(tops, test_records[name]) if r["prediction"]["label"] == "positive"]
        assert len(positive) >= 15 and all(top in POSITIVE for top in positive), (name, positive)
        assert sum(top in SENTIMENT for top in tops) >= 0.9 * len(tops), (name, tops)
    random_tops = [max(r["words"], key=lambda w: w["score"])["text"] for r in test_records["random"]]
    assert sum(top in SENTIMENT for top in random_tops) < 0.5 * len(random_tops)


def test_shap_and_integrated_gradients_are_more_faithful_than_random(predictor, test_records):
    from lccore_explain.faithfulness import evaluate

    scores = {name: evaluate(predictor, records) for name, records in test_records.items()}
    for name in ("shap", "integrated_gradients"):
        assert scores[name]["texts"] == 40
        assert scores[name]["comprehensiveness"] > 2 * scores["random"]["comprehensiveness"] + 0.02, scores
        assert scores[name]["sufficiency"] < scores["random"]["sufficiency"], scores


def test_ner_explains_each_predicted_entity(ner_predictor):
    predictor = ner_predictor
    texts = ["alice lives in boston .", "nothing here"]
    for name in EXPLAINERS:
        records = predictor.explain(texts, name)
        entities = [r for r in records if r["text_index"] == 0]
        assert [(r["target"]["text"], r["target"]["label"]) for r in entities] == [("alice", "PER"), ("boston", "LOC")]
        for record in records:
            check_record(record, texts[record["text_index"]], evaluated=bool(record["target"]))
            assert [w["text"] for w in record["words"]] == texts[record["text_index"]].split()
        empty = [r for r in records if r["text_index"] == 1]
        assert len(empty) == 1 and empty[0]["target"] == {} and "no entity predicted" in empty[0]["notes"][0]
        if name in ("shap", "integrated_gradients"):  # an entity is explained by its own word first
            for record in entities:
                top = max(record["words"], key=lambda w: w["score"])
                assert top["text"] == record["target"]["text"], (name, record["words"])
    only = predictor.explain(texts[:1], "random", target="LOC")
    assert [r["target"]["text"] for r in only] == ["boston"]


def test_bad_explainer_names_and_options_are_clear_errors(predictor):
    with pytest.raises(lccore.PluginError, match="unknown explainer 'shapp'"):
        predictor.explain(["great"], "shapp")
    with pytest.raises(lccore.ConfigError, match=r"explainer\.integrated_gradients\.n_step: unknown key \(did you mean 'n_steps'\?\)"):
        predictor.explain(["great"], "integrated_gradients", n_step=3)
    with pytest.raises(lccore.ConfigError, match="'neutral' is not a label"):
        predictor.explain(["great"], "random", target="neutral")


def test_cli_prints_json_records_and_top_words(trained_run, capsys):
    from lccore.cli import main

    run_dir = str(trained_run.output_dir)
    assert main(["explain", run_dir, "--text", "a wonderful show", "--explainer", "integrated_gradients", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [w["text"] for w in records[0]["words"]] == ["a", "wonderful", "show"]
    assert max(records[0]["words"], key=lambda w: w["score"])["text"] == "wonderful"

    assert main(["explain", run_dir, "--text", "a wonderful show", "--explainer", "random", "--target", "negative", "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == '"a wonderful show"' and lines[1].startswith("  negative (p = ") and "predicted: positive" in lines[1]
    assert len([line for line in lines if re.match(r"  [+-]\d\.\d{4}  ", line)]) == 2


def test_html_colours_are_on_one_absolute_scale():
    """Issue 18: ±0.004 on a p=0.52 prediction looked saturated when colours were relative to the text's largest score."""
    from lccore_explain.html import LEVELS, coloured_text, describe_method

    def record(*scores):
        words, text, position = [], "", 0
        for i, score in enumerate(scores):
            word = f"w{i}"
            words.append({"text": word, "start": position, "end": position + len(word), "score": score})
            text += word + " "
            position += len(word) + 1
        return {"text": text, "words": words, "method": "shap", "cost": {}}

    faint = coloured_text(record(0.004, -0.002))
    assert 'class="' not in faint  # tiny attributions stay uncoloured
    strong = coloured_text(record(0.004, 0.25, -0.1))
    assert f'<span title="+0.004">w0</span>' in strong and f'class="p{LEVELS}"' in strong and 'class="n3"' in strong
    assert "largest |score|: 0.004" in describe_method(record(0.004, -0.002))


def test_cli_html_page_is_static_and_works_under_a_strict_csp(trained_run, tmp_path, capsys):
    from lccore.cli import main

    page = tmp_path / "out.html"
    assert main(["explain", str(trained_run.output_dir), "--text", "the acting was <b>superb</b> & dull", "--explainer", "attention", "--html", str(page)]) == 0
    assert "explanation page written to" in capsys.readouterr().out
    html = page.read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "javascript:" not in html.lower()
    assert not re.search(r"\son[a-z]+\s*=", html, flags=re.I)  # no event handlers
    assert not re.search(r"(src|href)\s*=", html, flags=re.I) and not re.search(r"https?:|url\(", html)  # nothing loaded from anywhere
    assert "style=" not in html  # no inline style attributes: only the one <style> element
    style = re.search(r"<style>(.*?)</style>", html, flags=re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(style.encode("utf-8")).digest()).decode()
    assert f"default-src 'none'; style-src 'sha256-{digest}'" in html  # the page's own CSP allows exactly its CSS
    assert "<b>" not in html and "&lt;" in html and "&amp;" in html  # the text is escaped
    assert re.search(r'<span class="[pn]\d" title="[+-][\d.e-]+">', html)
    assert "prediction:" in html and "method: attention" in html and "model evaluations: 2" in html


def test_cli_evaluate_reports_each_explainer_and_random(trained_run, sentiment_files, tmp_path, capsys):
    from lccore.cli import main

    rows = [json.loads(line) for line in sentiment_files["dev"].read_text().splitlines()][:12]
    data = write_jsonl(tmp_path / "eval.jsonl", rows)
    args = ["explain", str(trained_run.output_dir), "--evaluate", "--data", str(data), "--explainer", "integrated_gradients"]
    assert main([*args, "--option", "n_steps=16", "--option", "max_n_steps=16", "--json"]) == 0  # a fixed budget: 16 points
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"integrated_gradients", "random"}
    for row in result.values():
        assert {"comprehensiveness", "sufficiency", "texts", "model_evaluations_per_text"} <= set(row) and row["texts"] == 12
    assert result["integrated_gradients"]["model_evaluations_per_text"] == 18
    assert result["integrated_gradients"]["comprehensiveness"] > result["random"]["comprehensiveness"]

    assert main([*args, "--explainer", "attention", "--option", "integrated_gradients.n_steps=8"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["explainer", "comprehensiveness", "sufficiency", "texts", "evaluations/text"]
    assert [line.split()[0] for line in table[1:4]] == ["integrated_gradients", "attention", "random"]


def test_cli_explain_shows_a_bar_per_explainer_over_the_texts(trained_run, sentiment_files, tmp_path, capsys, bars):
    """Issue 18: --evaluate on 60 texts ran 25 minutes without a word; each explainer now draws a
    bar over the texts (rate and ETA), unless --quiet."""
    from lccore.cli import main

    rows = [json.loads(line) for line in sentiment_files["dev"].read_text().splitlines()][:5]
    data = write_jsonl(tmp_path / "eval.jsonl", rows)
    args = ["explain", str(trained_run.output_dir), "--evaluate", "--data", str(data), "--explainer", "integrated_gradients", "--option", "n_steps=8", "--json"]
    assert main(args) == 0
    assert [(b.desc, b.unit, b.total, b.n, b.enabled) for b in bars] == [
        ("explain integrated_gradients", "text", 5, 5, True), ("explain random", "text", 5, 5, True)
    ]
    bars.clear()
    assert main([*args, "--quiet"]) == 0 and [b.enabled for b in bars] == [False, False]


def test_probe_is_explained_at_each_dev_evaluation_without_changing_training(tiny_config, tmp_path):
    probe = write_jsonl(tmp_path / "probe.jsonl", ["the show was brilliant", {"text": "a horrible meal"}])
    base = {**tiny_config, "train": {**tiny_config["train"], "epochs": 2, "eval_every": 7}}
    plain = lccore.train(base, tmp_path / "plain", progress=False)
    config = {**base, "explain": {"probe": str(probe), "explainers": ["integrated_gradients", "random"], "explainer_options": {"integrated_gradients": {"n_steps": 8}}}}
    run = lccore.train(config, tmp_path / "probed", progress=False)

    steps = [row["step"] for row in run.metrics["dev"]]
    assert steps == [7, 14, 20]
    folder = run.output_dir / "explanations"
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"step-{s}.json" for s in steps] + ["index.html"])
    for step in steps:
        saved = json.loads((folder / f"step-{step}.json").read_text())
        assert saved["step"] == step and set(saved["explanations"]) == {"integrated_gradients", "random"}
        assert [r["text"] for r in saved["explanations"]["integrated_gradients"]] == ["the show was brilliant", "a horrible meal"]
        assert saved["metrics"]["accuracy"] == next(r["accuracy"] for r in run.metrics["dev"] if r["step"] == step)
    page = (folder / "index.html").read_text()
    assert "<script" not in page and page.count("<tr><td class=\"num\">") == 2 * 2 * len(steps)
    # Explaining during training draws nothing from the training's random streams.
    assert [r["loss"] for r in run.metrics["train"]] == [r["loss"] for r in plain.metrics["train"]]
    assert run.config.explain.probe == str(probe)


def test_predictor_logits_is_one_batched_forward_pass_in_input_order(predictor, ner_predictor, test_texts):
    """The helper an explainer calls instead of encode -> collate -> device -> forward: its scores
    are the ones predictions come from, in input order whatever the batching, without padding."""
    import torch

    examples = [predictor.task.parse_input(text, f"text {i}") for i, text in enumerate(test_texts[:9])]
    logits = predictor.logits(examples, batch_size=4)  # length-sorted batches of 4: order must be restored
    predictions = predictor.predict_examples(examples)
    assert [tuple(row.shape) for row in logits] == [(len(predictor.task.labels),)] * len(examples)
    for row, prediction in zip(logits, predictions):
        probabilities = torch.softmax(row, dim=-1)
        assert predictor.task.labels[int(probabilities.argmax())] == prediction["label"]
        assert float(probabilities.max()) == pytest.approx(prediction["score"], abs=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(logits, predictor.logits(examples, batch_size=1)))

    texts = ["Alice lives in Paris", "Bob works at Acme Corp in London today"]  # two lengths: one is padded in a batch
    ner_examples = [ner_predictor.task.parse_input(text, f"text {i}") for i, text in enumerate(texts)]
    token_logits = ner_predictor.logits(ner_examples)
    features = ner_predictor.task.encode(ner_examples, ner_predictor.tokenizer, ner_predictor.config.train.max_length)
    lengths = [len(f["input_ids"]) for f in features]
    assert lengths[0] < lengths[1]
    assert [row.shape[0] for row in token_logits] == lengths
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(token_logits, ner_predictor.logits(ner_examples, batch_size=1)))
    with pytest.raises(lccore.ConfigError, match="batch_size"):
        predictor.logits(examples, batch_size=0)


PAIR_WORDS = "film book show plot meal story song city river game".split()


def pair_rows(count: int, seed: int) -> list[dict]:
    """The label is in the second text only (a sentiment word); the first is noise."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(count):
        a, b = rng.choice(PAIR_WORDS), rng.choice(PAIR_WORDS)
        good = i % 2 == 0
        rows.append({"headline": f"the {a} and the {b}", "body": f"a {'great' if good else 'awful'} {b} indeed", "label": "positive" if good else "negative"})
    return rows


@pytest.fixture(scope="module")
def pair_run(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("explain-pair")
    config = {
        "model": tiny_model,
        "task": {"name": "text_classification", "train": str(write_jsonl(folder / "train.jsonl", pair_rows(200, 0))),
                 "text_field": "headline", "text_pair_field": "body"},
        "optimizer": {"lr": 3e-3, **FROM_SCRATCH_SCHEDULE},
        "train": {"epochs": 4, "batch_size": 16, "max_length": 32, "seed": 1},
    }
    return lccore.train(config, folder / "run", progress=False)


@pytest.mark.parametrize("name", EXPLAINERS)
def test_a_text_pair_is_explained_word_by_word_in_both_of_its_texts(pair_run, name):
    predictor = lccore.load(pair_run.output_dir)
    inputs = [{"text": "the film and the song", "text_pair": "a great song indeed"},
              {"headline": "the river and the city", "body": "an awful city indeed"}]  # the run's own field names too
    predictions = predictor.predict([{"headline": "the film and the song", "body": "a great song indeed"}, inputs[1]])
    records = predictor.explain(inputs, name)
    assert [(r["text"], r["text_pair"]) for r in records] == [("the film and the song", "a great song indeed"), ("the river and the city", "an awful city indeed")]
    for record, prediction in zip(records, predictions):
        for field in ("text", "text_pair"):
            words = [w for w in record["words"] if w["field"] == field]
            assert [w["text"] for w in words] == record[field].split()
            assert all(record[field][w["start"]:w["end"]] == w["text"] for w in words)
        # scored as the task scores the pair: two segments, the second of token type 1
        assert record["target"] == {"label": prediction["label"]}
        assert record["target_score"] == pytest.approx(prediction["score"], abs=1e-4)
        if name in ("shap", "integrated_gradients"):  # the label is in the second text's sentiment word
            top = max(record["words"], key=lambda w: w["score"])
            assert (top["field"], top["text"]) in {("text_pair", "great"), ("text_pair", "awful")}, record["words"]


def test_faithfulness_and_the_page_take_text_pairs(pair_run, tmp_path, capsys):
    from lccore.cli import main

    predictor = lccore.load(pair_run.output_dir)
    inputs = [{"text": r["headline"], "text_pair": r["body"]} for r in pair_rows(6, 7)]
    scores = {name: predictor.engine.create("explainer", name, {}).faithfulness(predictor, predictor.explain(inputs, name))
              for name in ("shap", "random")}
    assert scores["shap"]["texts"] == 6 and scores["shap"]["comprehensiveness"] > scores["random"]["comprehensiveness"] + 0.02

    page = tmp_path / "why.html"
    assert main(["explain", str(pair_run.output_dir), "--text", "the film and the song", "--text-pair", "a great song indeed",
                 "--explainer", "integrated_gradients", "--html", str(page), "-q"]) == 0
    out = capsys.readouterr().out
    assert '"the film and the song" | "a great song indeed"' in out and "great (text_pair)" in out
    html = page.read_text(encoding="utf-8")
    assert ">great</span>" in html and ">film</span>" in html and "pair-sep" in html
    assert main(["explain", str(pair_run.output_dir), "--text", "a", "--text", "b", "--text-pair", "c"]) == 2
    assert "1 --text-pair for 2 --text" in capsys.readouterr().err
