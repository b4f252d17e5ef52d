"""The documentation is checked against the code: commands, generated reference, examples."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lccore

ROOT = Path(__file__).resolve().parents[1]


def code_blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def test_ci_runs_the_readme_setup_commands():
    setup = code_blocks(ROOT / "README.md", "bash")[0].strip().splitlines()
    assert setup[0] == 'pip install -e ".[dev]"'
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pip install -q -e \".[dev]\"" in ci
    assert ci.rstrip().splitlines()[-1] == setup[1]  # the test command, exactly


def test_config_reference_is_generated_from_the_code():
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "generate_config_reference.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_plugin_guide_example_works(tmp_path, tiny_config):
    source = code_blocks(ROOT / "docs" / "plugins.md", "python")[0]
    module_path = tmp_path / "lccore_rmsprop.py"
    module_path.write_text(source)
    spec = importlib.util.spec_from_file_location("lccore_rmsprop", module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    engine = lccore.Engine(plugins=[module])
    assert engine.component("optimizer", "rmsprop").plugin == "lccore_rmsprop"
    config = {**tiny_config, "optimizer": {"name": "rmsprop", "lr": 1e-3, "alpah": 0.9}}
    with pytest.raises(lccore.ConfigError, match=r"optimizer\.alpah: unknown key \(did you mean 'alpha'\?\)"):
        lccore.train(config, tmp_path / "typo", engine=engine, progress=False)
    config["optimizer"] = {"name": "rmsprop", "lr": 1e-3, "alpha": 0.9}
    config["train"] = {**tiny_config["train"], "epochs": 1}
    run = lccore.train(config, tmp_path / "run", engine=engine, progress=False)
    logged = [json.loads(line) for line in (run.output_dir / "steps.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged] == [row["step"] for row in run.metrics["train"]]
    assert run.config.optimizer.options["alpha"] == 0.9


def test_cli_reference_is_generated_from_the_parser():
    # A narrow terminal must not change the output: argparse wraps usage lines to $COLUMNS.
    env = {**os.environ, "COLUMNS": "40"}
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "generate_cli_reference.py"), "--check"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


def test_cli_reference_covers_every_command_and_flag():
    import argparse

    spec = importlib.util.spec_from_file_location("generate_cli_reference", ROOT / "docs" / "generate_cli_reference.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)

    reference = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    parsers = [generator.build_parser()]
    while parsers:
        parser = parsers.pop()
        assert f"# `{parser.prog}`\n" in reference, parser.prog
        section = reference.split(f"# `{parser.prog}`\n", 1)[1].split("\n#", 1)[0]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers += list(action.choices.values())
            elif action.option_strings and not isinstance(action, argparse._HelpAction):
                assert f"| `{action.option_strings[0]}`" in section, (parser.prog, action.option_strings)


def test_architecture_names_every_kernel_module():
    architecture = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([\w/]+(?:\.py)?)` \|", architecture, flags=re.M))
    modules = {p.name for p in (ROOT / "lccore").glob("*.py")} | {p.name + "/" for p in (ROOT / "lccore").iterdir() if (p / "__init__.py").exists()}
    assert modules <= listed, f"not in docs/architecture.md: {sorted(modules - listed)}"
    assert set(lccore.COMPONENT_KINDS) <= listed  # the table of component kinds
