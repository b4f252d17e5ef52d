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


def test_no_kernel_module_imports_one_that_imports_it_back():
    """The kernel's import graph has no circles, counting imports inside functions too. `from . import
    x` counts as importing `lccore.x`, and anything else from the package as importing its
    `__init__` (which imports the public API)."""
    import ast

    modules = {}
    for path in (ROOT / "lccore").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                submodules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in modules]
                graph[name].update(m for m in (submodules or [target]) if m in modules and m != name)
            elif isinstance(node, ast.Import):
                graph[name].update(alias.name for alias in node.names if alias.name in modules and alias.name != name)

    def reaches(start, goal, seen):
        return any(step == goal or (step not in seen and not seen.add(step) and reaches(step, goal, seen)) for step in graph[start])

    circles = sorted(name for name in graph if reaches(name, name, set()))
    assert not circles, f"modules that import themselves back through others: {circles}"


def kernel_layers() -> list[tuple[str, list[str], int]]:
    """docs/architecture.md's layer table: (layer, its modules, its budget in lines), top layer first."""
    architecture = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| ([a-z][a-z ]*) \| ((?:`[\w/.]+`(?:, )?)+) \| [^|]+ \| (\d+) \|$", architecture, flags=re.M)
    return [(name, re.findall(r"`([\w/.]+)`", modules), int(budget)) for name, modules, budget in reversed(rows)]


def test_the_kernel_keeps_its_layers_and_their_budgets():
    """Every kernel module is in exactly one layer of docs/architecture.md, imports (inside functions
    too) nothing from a layer above its own, and each layer stays within its budget in lines."""
    import ast

    layers = kernel_layers()
    assert [name for name, _, _ in layers][:2] == ["command line", "training"], layers  # the table was read
    layer_of, lines = {}, {name: 0 for name, _, _ in layers}
    for path in sorted((ROOT / "lccore").rglob("*.py")):
        relative = path.relative_to(ROOT / "lccore").as_posix()
        if relative.startswith("testing/"):  # the kit for plugin authors, not the kernel
            continue
        owners = [(rank, name) for rank, (name, modules, _) in enumerate(layers)
                  if relative in modules or any(m.endswith("/") and relative.startswith(m) for m in modules)]
        assert len(owners) == 1, f"lccore/{relative}: in {len(owners)} layers of docs/architecture.md, expected one"
        layer_of[relative] = owners[0]
        lines[owners[0][1]] += len(path.read_text(encoding="utf-8").splitlines())
    over = {name: (lines[name], budget) for name, _, budget in layers if lines[name] > budget}
    assert not over, f"layers over their budget (lines, budget): {over}"

    def module_file(dotted: str) -> str | None:
        if dotted.split(".")[0] != "lccore":
            return None
        parts = dotted.split(".")[1:]
        for candidate in ("/".join(parts) + ".py", "/".join(parts + ["__init__.py"]) if parts else "__init__.py"):
            if candidate in layer_of:
                return candidate
        return None

    upward = []
    for relative, (rank, name) in layer_of.items():
        package = ("lccore/" + relative).rpartition("/")[0].replace("/", ".")
        for node in ast.walk(ast.parse((ROOT / "lccore" / relative).read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
                target = ".".join(filter(None, [base, node.module])) if node.level else (node.module or "")
                names = [f"{target}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for dotted in names:
                imported = module_file(dotted) or module_file(dotted.rpartition(".")[0])
                if imported and imported != relative and layer_of[imported][0] < rank:
                    upward.append(f"lccore/{relative} ({name}) imports lccore/{imported} ({layer_of[imported][1]})")
    assert not upward, upward
