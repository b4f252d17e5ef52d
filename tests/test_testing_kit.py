"""lccore.testing: the conformance kit passes every first-party plugin with none of its tasks or
heads skipped (each on the tiny model it needs), catches a broken one, passes a freshly scaffolded
plugin of every kind, and checks an example third-party distribution once installed: its kit and
its own tests pass, and its runs keep loading after a plugin registering the same names arrives."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
import types
from pathlib import Path

import pytest

import lccore
from lccore.testing import check_plugin
from conftest import make_distribution

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["lccore"]
SLOW = {"explainer:shap": "SHAP's partition explainer takes seconds per text; the explain tests cover it"}


#: Components that need a model other than the encoder: the kit must pick the right tiny one.
ARCHITECTURE = {
    ("task", "clm"): "decoder", ("task", "dialogue"): "decoder", ("task", "summarization"): "decoder",
    ("task", "translation"): "decoder", ("head", "causal_lm"): "decoder", ("head", "generative_lm"): "decoder",
    ("head", "seq2seq_lm"): "encoder_decoder",
}


@pytest.mark.parametrize("name", sorted(FIRST_PARTY))
def test_first_party_plugin_passes_the_kit_with_no_task_or_head_skipped(name, tiny_model):
    report = check_plugin(FIRST_PARTY[name], model=tiny_model, skip=SLOW)
    assert report.passed, str(report)
    assert not report.failures
    # Every task writes example data and every head finds a task and a tiny model: none is skipped.
    assert not [c for c in report.skipped if c.kind in ("task", "head")], str(report)
    engine = lccore.Engine(entry_points=False, plugins=[FIRST_PARTY[name]], use_env=False)
    passed = {(c.kind, c.name, c.check): c.reason for c in report.passed}
    for task in engine.names("task"):
        outcome = passed.get(("task", task, "encode/collate/decode/metrics round-trip"))
        assert outcome is not None, str(report)
        assert outcome.endswith(f"(tiny {ARCHITECTURE.get(('task', task), 'encoder')})"), outcome
    for head in engine.names("head"):
        assert ("head", head, "trains one step") in passed, str(report)
        assert ("head", head, "saves and reloads with equal outputs") in passed, str(report)
        where = passed[("head", head, "builds from the tiny model")]
        assert where.endswith(f"on the tiny {ARCHITECTURE.get(('head', head), 'encoder')}"), where


def test_kit_reports_what_it_ran(tiny_model):
    report = check_plugin("lccore_text_classification", model=tiny_model)
    checks = {(c.kind, c.name, c.check): c.status for c in report.checks}
    assert checks[("task", "text_classification", "encode/collate/decode/metrics round-trip")] == "pass"
    assert checks[("head", "sequence_classifier", "saves and reloads with equal outputs")] == "pass"
    assert "0 failed" in str(report).splitlines()[0]


def test_kit_takes_models_by_architecture_and_refuses_an_unknown_one(tiny_model):
    report = check_plugin("lccore_language_modeling", model={"encoder": tiny_model}, skip=["head"])
    checks = {(c.name, c.check): c.reason for c in report.passed}
    assert checks[("mlm", "encode/collate/decode/metrics round-trip")].endswith("(tiny encoder)")
    assert checks[("clm", "encode/collate/decode/metrics round-trip")].endswith("(tiny decoder)")  # built by the kit
    with pytest.raises(ValueError, match="unknown architecture"):
        check_plugin("lccore_language_modeling", model={"decoder_only": tiny_model})


def broken_plugin(slip: str = "decode") -> types.ModuleType:
    """A task whose decode drops the last record, or whose metrics accumulator keeps only the
    last chunk: what a slip in a real plugin looks like."""
    module = types.ModuleType("lccore_broken_task")

    @lccore.hookimpl
    def register_tasks(register):
        def make(options):
            from lccore_text_classification.task import LabelPairs, TextClassificationTask

            class LastChunkOnly(LabelPairs):
                def update(self, predictions, examples):
                    del self.gold[:], self.predicted[:]
                    super().update(predictions, examples)

            class Broken(TextClassificationTask):
                def decode(self, outputs, batch, features):
                    records = super().decode(outputs, batch, features)
                    return records[:-1] if slip == "decode" else records

                def metrics_accumulator(self):
                    return LastChunkOnly(self) if slip == "accumulator" else super().metrics_accumulator()

                def metrics(self, predictions, examples):  # the whole-file scores, not through the accumulator
                    accumulator = LabelPairs(self)
                    accumulator.update(predictions, examples)
                    return accumulator.compute()

            return Broken(options)

        from lccore_text_classification import TextClassificationOptions

        register("broken_classification", make, options=TextClassificationOptions)

    module.register_tasks = register_tasks
    return module


def test_kit_catches_a_task_whose_decode_loses_records(tiny_model):
    with pytest.raises(AssertionError, match=r"task 'broken_classification' encode/collate/decode/metrics round-trip: decode returned 3 records for 4 features"):
        check_plugin(broken_plugin(), model=tiny_model)
    report = check_plugin(broken_plugin(), model=tiny_model, raise_on_failure=False)
    assert [c.check for c in report.failures] == ["encode/collate/decode/metrics round-trip"]
    assert report.failed == report.failures and not report.ok  # issue 19: `report.failed` raised AttributeError
    assert all(c.status in ("pass", "fail", "skip") for c in report.checks) and str(report).startswith("lccore plugin check of ")


def test_kit_catches_a_metrics_accumulator_that_disagrees_with_metrics(tiny_model):
    with pytest.raises(AssertionError, match=r"metrics_accumulator, fed one example at a time, disagrees with metrics on accuracy"):
        check_plugin(broken_plugin("accumulator"), model=tiny_model)


def test_kit_fails_a_plugin_that_does_not_load():
    module = types.ModuleType("lccore_typo")

    @lccore.hookimpl
    def register_task(register):  # misspelled hook
        pass

    module.register_task = register_task
    with pytest.raises(AssertionError, match="matches no hook spec"):
        check_plugin(module)


#: Per scaffolded kind: the plugin's name and the checks its component must pass.
SCAFFOLDED = {
    "task": ("keyword_classifier", ["encode/collate/decode/metrics round-trip"]),
    "head": ("mean_pooled", ["builds from the tiny model", "trains one step", "saves and reloads with equal outputs"]),
    "explainer": ("occlusion", ["one attribution per word"]),
    "ethics_policy": ("digit_runs", ["valid decisions at every stage"]),
}


def test_every_scaffold_kind_is_tested_and_offered_by_the_cli():
    from lccore.cli import build_parser
    from lccore_scaffold import KINDS

    assert set(SCAFFOLDED) == set(KINDS)
    for kind in KINDS:
        assert build_parser().parse_args(["new-plugin", "x", "--kind", kind]).kind == kind
    with pytest.raises(SystemExit):
        build_parser().parse_args(["new-plugin", "x", "--kind", "optimizer"])


@pytest.mark.parametrize("kind", sorted(SCAFFOLDED))
def test_new_plugin_scaffold_passes_the_kit(kind, tmp_path, tiny_model, monkeypatch, capsys):
    import importlib.util

    from lccore.cli import main

    name, checks = SCAFFOLDED[kind]
    assert main(["new-plugin", name, "--kind", kind, "--output", str(tmp_path)]) == 0
    root = tmp_path / f"lccore-{name.replace('_', '-')}"
    assert str(root) in capsys.readouterr().out
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["lccore"] == {name: f"lccore_{name}"}
    assert (root / "tests" / "test_plugin.py").exists() and (root / "README.md").exists()
    monkeypatch.syspath_prepend(str(root))
    module = importlib.import_module(f"lccore_{name}")

    # A head no task uses by default is checked with the task its scaffolded test names.
    report = check_plugin(module, model=tiny_model, head_tasks={name: "text_classification"} if kind == "head" else None)
    passed = {(c.kind, c.name, c.check) for c in report.passed}
    assert {(kind, name, check) for check in checks} <= passed, str(report)
    assert not report.skipped and not report.failures, str(report)

    # The scaffold's own tests pass as written (run here, in this interpreter, without installing it).
    spec = importlib.util.spec_from_file_location(f"scaffold_test_{name}", root / "tests" / "test_plugin.py")
    generated = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generated)
    tests = [getattr(generated, attribute) for attribute in dir(generated) if attribute.startswith("test_")]
    assert tests
    for test in tests:
        test()
    assert main(["new-plugin", name, "--kind", kind, "--output", str(tmp_path)]) == 2  # a config error: never over an existing one


def test_new_plugin_refuses_an_unknown_kind(tmp_path):
    from lccore_scaffold.scaffold import new_plugin

    with pytest.raises(lccore.ConfigError, match="kinds: task, head, explainer, ethics_policy"):
        new_plugin("anything", tmp_path, kind="optimizer")


EXAMPLE = ROOT / "examples" / "lccore-example-plugin"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory) -> Path:
    """examples/lccore-example-plugin, pip-installed into an empty prefix (once for this module)."""
    target = tmp_path_factory.mktemp("example-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, text=True,
    )
    return target


def fresh_interpreter(arguments: list[str], cwd: Path, *paths: Path) -> subprocess.CompletedProcess:
    """``python ARGUMENTS`` with only ``paths`` added to the installed packages (no plugin disabled)."""
    environ = {key: value for key, value in os.environ.items() if key != "LCCORE_DISABLE_PLUGINS"}
    environ.update(PYTHONPATH=os.pathsep.join(str(p) for p in paths), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, *arguments], cwd=cwd, env=environ, capture_output=True, text=True)


def test_example_distribution_installs_and_passes_the_kit(installed_example, tmp_path):
    """pip installs examples/lccore-example-plugin into an empty prefix; a fresh interpreter with only
    that prefix added discovers its two plugins through their entry points and runs the kit, with
    the fixtures plugin (the occlusion explainer on the distribution's own pair task), then the
    distribution's own tests against the installed copy (training its task on a tiny model)."""
    shutil.copy(EXAMPLE / "tests" / "test_plugin.py", tmp_path / "test_example_plugin.py")
    test_file = tmp_path / "test_installed.py"
    test_file.write_text(textwrap.dedent("""
        from lccore.testing import check_plugin

        def test_installed(lccore_engine, tiny_model_dir):
            assert lccore_engine.plugin_of("ethics_policy", "word_blocklist").distribution == "lccore-example-plugin"
            assert lccore_engine.plugin_of("task", "headline_match").distribution == "lccore-example-plugin"
            report = check_plugin("lccore-example-plugin", model=tiny_model_dir, explainer_tasks={"occlusion": "headline_match"})
            assert not report.skipped
            assert sorted({(c.kind, c.name) for c in report.passed}) == [
                ("ethics_policy", "word_blocklist"), ("explainer", "occlusion"), ("head", "headline_body_head"),
                ("optimizer", "lion"), ("plugin", "lccore_headline_match"), ("plugin", "lccore_word_blocklist"),
                ("task", "headline_match"),
            ]
    """))
    result = fresh_interpreter(["-m", "pytest", "-q", "-p", "lccore.testing.fixtures", "-p", "no:cacheprovider", str(test_file),
                                str(tmp_path / "test_example_plugin.py")], tmp_path, installed_example)
    assert result.returncode == 0, result.stdout + result.stderr
    own = (EXAMPLE / "tests" / "test_plugin.py").read_text().count("\ndef test_")
    assert f"{1 + own} passed" in result.stdout and "skipped" not in result.stdout, result.stdout


#: Another distribution installed later that registers every name the example's run uses (and its explainer).
CLASHING_EXAMPLE = """
    import lccore

    @lccore.hookimpl
    def register_tasks(register):
        register("headline_match", lambda: "not the task the run was trained with")

    @lccore.hookimpl
    def register_heads(register):
        register("headline_body_head", lambda: "not the head either")

    @lccore.hookimpl
    def register_optimizers(register):
        register("lion", lambda param_groups, config: "another lion")

    @lccore.hookimpl
    def register_explainers(register):
        register("occlusion", lambda: "another occlusion")
"""

TRAIN_WITH_THE_EXAMPLE = """
import json, sys
from pathlib import Path

import lccore
from lccore.testing import build_tiny_model

work = Path(sys.argv[1])
data = lccore.Engine().create("task", "headline_match").example_data(work)  # its own sample rows
config = {"model": build_tiny_model(work / "tiny"), "task": {"name": "headline_match", "train": str(data["train"]), "dev": str(data["dev"])},
          "optimizer": {"name": "lion", "lr": 1e-3}, "train": {"epochs": 2, "batch_size": 4, "max_length": 32, "seed": 7}}
run = lccore.train(config, work / "run", progress=False)
manifest = json.loads((run.output_dir / "manifest.json").read_text())
assert {kind: c["plugin"] for kind, c in manifest["components"].items()} == {"task": "headline_match", "head": "headline_match", "optimizer": "headline_match"}
predictor = run.load()
inputs = [{"headline": "alice visited paris", "body": "alice went to paris today"}, {"headline": "a great film", "body": "the meal was dreadful"}]
before = {"inputs": inputs, "dev": str(data["dev"]), "predictions": predictor.predict(inputs), "metrics": predictor.evaluate(data["dev"]),
          "explained": predictor.explain(inputs, explainer="occlusion")}
# lccore's own explainers take another plugin's pair classifier too, words from both texts
[shap] = predictor.explain(inputs[:1], explainer="shap")
assert shap["target"]["label"] in ("match", "mismatch") and {w.get("field") for w in shap["words"]} == {"text", "text_pair"}, shap
(work / "before.json").write_text(json.dumps(before))

# the plugin's own `lccore serve` endpoint (register_routes), behind the server's key and the run's policies
import asyncio, httpx
from lccore_serve.app import create_app

bodies = ["the meal was dreadful", "alice went to paris today", "a dreadful day"]
app = create_app({"headlines": predictor}, api_key="k")

async def call(path, payload, key="k", app=app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve") as http:
        return await http.post(path, json=payload, headers={"Authorization": f"Bearer {key}"})

ranked = asyncio.run(call("/v1/headline_match/rank", {"headline": "alice visited paris", "bodies": bodies})).json()
expected = [r["score"] if r["label"] == "match" else 1 - r["score"] for r in predictor.predict([{"headline": "alice visited paris", "body": b} for b in bodies])]
assert [item["index"] for item in ranked["ranking"]] == sorted(range(3), key=lambda i: -expected[i]), (ranked, expected)
assert all(abs(item["match"] - expected[item["index"]]) < 1e-5 for item in ranked["ranking"])
assert asyncio.run(call("/v1/headline_match/rank", {"headline": "x", "bodies": ["y"]}, key="guess")).status_code == 401
bad = asyncio.run(call("/v1/headline_match/rank", {"headline": "x", "bodies": "y"}))
assert bad.status_code == 422 and bad.json()["field"] == "bodies", bad.text
guarded = create_app({"headlines": predictor}, api_key="k", ethics_items=[{"name": "word_blocklist", "words": ["dreadful"], "action": "block"}])
refused = asyncio.run(call("/v1/headline_match/rank", {"headline": "alice visited paris", "bodies": bodies}, app=guarded))
assert refused.status_code == 403 and refused.json()["detail"].startswith("bodies[0]: refused by the ethics policies"), refused.text
"""

LOAD_AFTER_THE_CLASH = """
import contextlib, io, json, os, sys
from pathlib import Path

import lccore
from lccore.cli import main

work = Path(sys.argv[1])
before = json.loads((work / "before.json").read_text())
engine = lccore.Engine()
assert engine.plugins["clash"].status == "loaded", engine.report()
assert [c.plugin for c in engine.owners("task", "headline_match")] == ["clash", "headline_match"]

# the finished run takes its task and head from the plugin its manifest records, and needs no optimizer
predictor = lccore.load(work / "run")
assert predictor.predict(before["inputs"]) == before["predictions"]
assert predictor.evaluate(before["dev"]) == before["metrics"]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    assert main(["evaluate", str(work / "run"), "--data", before["dev"], "-q"]) == 0
assert json.loads(out.getvalue()) == before["metrics"]

# an explainer is not part of a run: its name is looked up among the installed plugins, and two have it
try:
    predictor.explain(before["inputs"], explainer="occlusion")
except lccore.PluginError as exc:
    assert "explainer 'occlusion' is registered by two plugins" in str(exc), exc
else:
    raise AssertionError("an ambiguous explainer name was resolved")
# a new run must choose as well: by disabling one of the two plugins
config = {"model": str(work / "tiny"), "task": {"name": "headline_match", "train": before["dev"]}, "train": {"max_steps": 1, "max_length": 32}}
try:
    lccore.train(config, work / "new", progress=False)
except lccore.PluginError as exc:
    assert "task 'headline_match' is registered by two plugins" in str(exc) and "plugins.disable" in str(exc), exc
else:
    raise AssertionError("an ambiguous task name was resolved")
lccore.train({**config, "plugins": {"disable": ["clash"]}}, work / "chosen", progress=False)
os.environ["LCCORE_DISABLE_PLUGINS"] = "clash"  # or for every command: the explainer is the example's again
without_time = lambda records: [{**r, "cost": {**r["cost"], "seconds": None}} for r in records]
assert without_time(lccore.load(work / "run").explain(before["inputs"], explainer="occlusion")) == without_time(before["explained"])
print("ok")
"""


def test_a_run_of_the_installed_example_keeps_loading_after_a_clashing_plugin_is_installed(installed_example, tmp_path):
    """Issue 19: the installed example distribution trains on a tiny model in a fresh interpreter;
    then a second distribution registering the same task, head, optimizer and explainer names is
    installed, and in another fresh interpreter the run still loads, predicts and evaluates (the
    Python API and `lccore evaluate`) as before. Names no run records (an explainer, a new run's
    task) are ambiguous until one plugin is disabled."""
    later = tmp_path / "later-site"  # on the path from the start, empty until the clashing distribution is installed
    later.mkdir()
    (tmp_path / "train.py").write_text(TRAIN_WITH_THE_EXAMPLE)
    result = fresh_interpreter(["train.py", str(tmp_path)], tmp_path, installed_example, later)
    assert result.returncode == 0, result.stdout + result.stderr
    make_distribution(later, "lccore-clash", {"lccore_clash": CLASHING_EXAMPLE}, {"clash": "lccore_clash"})
    (tmp_path / "load.py").write_text(LOAD_AFTER_THE_CLASH)
    result = fresh_interpreter(["load.py", str(tmp_path)], tmp_path, installed_example, later)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok")
