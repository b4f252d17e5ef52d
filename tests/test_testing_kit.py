"""lccore.testing: the conformance kit passes every first-party plugin, catches a broken one,
passes a freshly scaffolded plugin, and checks an example third-party distribution once installed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
import types
from pathlib import Path

import pytest

import lccore
from lccore.testing import check_plugin

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["lccore"]
SLOW = {"explainer:shap": "SHAP's partition explainer takes seconds per text; the explain tests cover it"}


@pytest.mark.parametrize("name", sorted(FIRST_PARTY))
def test_first_party_plugin_passes_the_kit(name, tiny_model):
    report = check_plugin(FIRST_PARTY[name], model=tiny_model, skip=SLOW)
    assert report.passed, str(report)
    assert not report.failures


def test_kit_reports_what_it_ran(tiny_model):
    report = check_plugin("lccore_text_classification", model=tiny_model)
    checks = {(c.kind, c.name, c.check): c.status for c in report.checks}
    assert checks[("task", "text_classification", "encode/collate/decode/metrics round-trip")] == "pass"
    assert checks[("head", "sequence_classifier", "saves and reloads with equal outputs")] == "pass"
    assert "0 failed" in str(report).splitlines()[0]


def broken_plugin() -> types.ModuleType:
    """A task whose decode drops the last record: what a slip in a real plugin looks like."""
    module = types.ModuleType("lccore_broken_task")

    @lccore.hookimpl
    def register_tasks(register):
        def make(options):
            from lccore_text_classification.task import TextClassificationTask

            class Broken(TextClassificationTask):
                def decode(self, outputs, batch, features):
                    return super().decode(outputs, batch, features)[:-1]

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


def test_kit_fails_a_plugin_that_does_not_load():
    module = types.ModuleType("lccore_typo")

    @lccore.hookimpl
    def register_task(register):  # misspelled hook
        pass

    module.register_task = register_task
    with pytest.raises(AssertionError, match="matches no hook spec"):
        check_plugin(module)


def test_new_plugin_scaffold_passes_the_kit(tmp_path, tiny_model, monkeypatch, capsys):
    from lccore.cli import main

    assert main(["new-plugin", "keyword_classifier", "--output", str(tmp_path)]) == 0
    root = tmp_path / "lccore-keyword-classifier"
    assert str(root) in capsys.readouterr().out
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["lccore"] == {"keyword_classifier": "lccore_keyword_classifier"}
    assert (root / "tests" / "test_plugin.py").exists() and (root / "README.md").exists()
    monkeypatch.syspath_prepend(str(root))
    import lccore_keyword_classifier

    report = check_plugin(lccore_keyword_classifier, model=tiny_model)
    assert {(c.kind, c.name) for c in report.passed} >= {("task", "keyword_classifier")}
    assert not report.skipped
    assert main(["new-plugin", "keyword_classifier", "--output", str(tmp_path)]) == 2  # a config error: never over an existing one


def test_example_distribution_installs_and_passes_the_kit(tmp_path):
    """pip installs examples/lccore-example-plugin into an empty prefix; a fresh interpreter with only
    that prefix added discovers it through its entry point and runs the kit, with the fixtures plugin."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(ROOT / "examples" / "lccore-example-plugin")],
        check=True, capture_output=True, text=True,
    )
    test_file = tmp_path / "test_installed.py"
    test_file.write_text(textwrap.dedent("""
        from lccore.testing import check_plugin

        def test_installed(lccore_engine, tiny_model_dir):
            assert lccore_engine.plugin_of("ethics_policy", "word_blocklist").distribution == "lccore-example-plugin"
            report = check_plugin("lccore-example-plugin", model=tiny_model_dir)
            assert [c.name for c in report.passed] == ["lccore_word_blocklist", "word_blocklist"]
    """))
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "lccore.testing.fixtures", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
