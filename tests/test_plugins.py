"""Plugin discovery through entry points, failure isolation, disabling, conflicts, isolation."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

import lccore
from lccore.cli import main
from conftest import make_distribution

GOOD_PLUGIN = """
    import lccore

    @lccore.hookimpl
    def register_tasks(register):
        register("echo_task", lambda: "echo", description="third-party task")

    @lccore.hookimpl
    def register_explainers(register):
        register("constant_explainer", lambda: "explainer")
"""


def test_third_party_plugin_is_discovered_like_first_party(site):
    make_distribution(site, "lccore-echo", {"lccore_echo": GOOD_PLUGIN}, {"echo": "lccore_echo"})
    engine = lccore.Engine()
    plugin = engine.plugins["echo"]
    assert (plugin.status, plugin.distribution, plugin.version) == ("loaded", "lccore-echo", "1.2.3")
    assert plugin.components == {"task": ["echo_task"], "explainer": ["constant_explainer"]}
    assert engine.create("task", "echo_task") == "echo"
    # first-party plugins come through the very same entry-point group
    assert engine.plugins["text_classification"].distribution == "lccore"
    assert "sequence_classifier" in engine.names("head")


def test_broken_plugins_are_reported_and_the_rest_keep_working(site):
    make_distribution(
        site,
        "lccore-broken",
        {
            "broken_import": "import a_module_that_does_not_exist\n",
            "broken_typo": """
                import lccore
                @lccore.hookimpl
                def register_task(register):
                    register("never", lambda: None)
            """,
            "broken_signature": """
                import lccore
                @lccore.hookimpl
                def register_tasks(registrar):
                    registrar("never", lambda: None)
            """,
            "broken_register": """
                import lccore
                @lccore.hookimpl
                def register_heads(register):
                    register("half_registered", lambda: None)
                @lccore.hookimpl
                def register_tasks(register):
                    raise RuntimeError("database unavailable")
            """,
        },
        {"imp": "broken_import", "typo": "broken_typo", "sig": "broken_signature", "reg": "broken_register"},
    )
    engine = lccore.Engine()
    statuses = {name: (p.status, p.reason) for name, p in engine.plugins.items()}
    assert statuses["imp"][0] == "failed" and "a_module_that_does_not_exist" in statuses["imp"][1]
    assert statuses["typo"][0] == "failed" and "did you mean 'register_tasks'" in statuses["typo"][1]
    assert statuses["sig"][0] == "failed" and "registrar" in statuses["sig"][1]
    assert statuses["reg"][0] == "failed" and "database unavailable" in statuses["reg"][1]
    assert "half_registered" not in engine.names("head")  # a failed registration leaves nothing behind
    assert engine.plugins["text_classification"].status == "loaded"
    assert "text_classification" in engine.names("task")

    result = subprocess.run([sys.executable, "-m", "lccore.cli", "plugins"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "imp  [failed]  lccore-broken 1.2.3" in result.stdout
    assert "database unavailable" in result.stdout
    assert "text_classification  [loaded]" in result.stdout
    assert "scaffold  [loaded]  lccore 0.1.0\n    commands: lccore new-plugin\n" in result.stdout  # a plugin that only adds a command
    assert "commands: lccore kg import" in result.stdout


def test_disabled_plugin_is_never_imported(site, monkeypatch):
    make_distribution(site, "lccore-echo", {"lccore_echo_disabled": GOOD_PLUGIN}, {"echo": "lccore_echo_disabled"})
    monkeypatch.setenv("LCCORE_DISABLE_PLUGINS", "echo")
    engine = lccore.Engine()
    assert engine.plugins["echo"].status == "disabled"
    assert "lccore_echo_disabled" not in sys.modules
    with pytest.raises(lccore.PluginError, match="unknown task 'echo_task'.*plugins not loaded: echo"):
        engine.component("task", "echo_task")
    # the config key does the same without the environment variable
    monkeypatch.delenv("LCCORE_DISABLE_PLUGINS")
    assert lccore.Engine(disable=["text_classification"]).plugins["text_classification"].status == "disabled"


def test_disabling_a_plugin_no_one_installed_warns_with_the_close_name(monkeypatch, capsys):
    monkeypatch.setenv("LCCORE_DISABLE_PLUGINS", "text_clasification,echo")
    engine = lccore.Engine()
    assert engine.plugins["text_classification"].status == "loaded"
    err = capsys.readouterr().err
    assert "names 'text_clasification', which no installed plugin is called (did you mean 'text_classification'?)" in err
    assert "'echo'" in err and "installed: " in err  # no close name: the installed ones are listed
    lccore.Engine()
    assert capsys.readouterr().err == ""  # said once per process


def test_disabling_from_the_run_config(tiny_config, tmp_path):
    config = {**tiny_config, "plugins": {"disable": ["text_classification"]}}
    with pytest.raises(lccore.PluginError, match="unknown task 'text_classification'"):
        lccore.train(config, tmp_path / "run", progress=False)


def test_same_component_name_from_two_plugins_is_an_error_naming_both(site):
    make_distribution(site, "lccore-one", {"plugin_one": GOOD_PLUGIN}, {"one": "plugin_one"})
    make_distribution(site, "lccore-two", {"plugin_two": GOOD_PLUGIN}, {"two": "plugin_two"})
    engine = lccore.Engine()
    with pytest.raises(lccore.PluginError) as error:
        engine.component("task", "echo_task")
    message = str(error.value)
    assert "'one' (lccore-one 1.2.3)" in message and "'two' (lccore-two 1.2.3)" in message
    assert engine.component("task", "text_classification").plugin == "text_classification"  # others unaffected
    assert [c.plugin for c in engine.owners("task", "echo_task")] == ["one", "two"]


def test_engines_are_isolated():
    first, second = types.ModuleType("first"), types.ModuleType("second")

    @lccore.hookimpl
    def register_tasks(register):
        register("only_in_first", lambda: 1)

    first.register_tasks = register_tasks
    engine_a = lccore.Engine(entry_points=False, plugins=[first])
    engine_b = lccore.Engine(entry_points=False, plugins=[second])
    assert engine_a.names("task") == ["only_in_first"]
    assert engine_b.names("task") == []
    with pytest.raises(lccore.PluginError, match="did you mean 'only_in_first'"):
        engine_a.component("task", "only_in_firts")


def test_lifecycle_observers_see_the_run_and_cannot_break_it(tiny_config, tmp_path, caplog):
    events = []
    observer = types.ModuleType("observer")
    observer.on_train_start = lccore.hookimpl(lambda run: events.append(("start", run.step)))
    observer.on_train_step = lccore.hookimpl(lambda step, logs: events.append(("step", step, logs["loss"] > 0)))
    observer.on_evaluate = lccore.hookimpl(lambda split, metrics: events.append(("evaluate", split, "accuracy" in metrics)))
    observer.on_checkpoint = lccore.hookimpl(lambda path: events.append(("checkpoint", (path / "config.json").exists())))
    observer.on_train_end = lccore.hookimpl(lambda metrics: events.append(("end", "after" in metrics["test"])))
    faulty = types.ModuleType("faulty")

    def explode(step):
        raise RuntimeError("observer bug")

    faulty.on_train_step = lccore.hookimpl(explode)

    import lccore_optimizers
    import lccore_text_classification

    engine = lccore.Engine(entry_points=False, plugins=[lccore_text_classification, lccore_optimizers, observer, faulty])
    config = {**tiny_config, "train": {**tiny_config["train"], "epochs": 2}}
    run = lccore.train(config, tmp_path / "run", engine=engine, progress=False)
    steps = [e for e in events if e[0] == "step"]
    assert events[0] == ("evaluate", "test.before", True)
    assert events[1] == ("start", 0)
    assert len(steps) == run.metrics["train"][-1]["step"] and all(e[2] for e in steps)
    assert ("evaluate", "dev", True) in events and ("checkpoint", True) in events
    assert events[-2:] == [("evaluate", "test.after", True), ("end", True)]
    assert sum("observer bug" in r.getMessage() and "faulty" in r.getMessage() for r in caplog.records) == 1


COMMAND_PLUGIN = """
    import lccore

    @lccore.hookimpl
    def register_commands(commands):
        greet = commands.add("greet", help="say hello")
        greet.add_argument("name")
        greet.set_defaults(command=lambda args: print(f"hello {args.name}") or 0)
        commands.group("kg", help="knowledge graphs")
        shout = commands.add("shout", group="kg", help="shout a store's name")
        shout.add_argument("store")
        shout.set_defaults(command=lambda args: print(args.store.upper()) or 3)
"""


def test_plugins_add_commands_and_groups_and_cannot_take_a_used_name(site, capsys, caplog):
    make_distribution(site, "lccore-greet", {"lccore_greet": COMMAND_PLUGIN}, {"greet": "lccore_greet"})
    taken = """
        import lccore

        @lccore.hookimpl
        def register_commands(commands):
            commands.add("train", help="a second train")
    """
    make_distribution(site, "lccore-taken", {"lccore_taken": taken}, {"taken": "lccore_taken"})
    assert main(["greet", "ada"]) == 0 and capsys.readouterr().out == "hello ada\n"
    assert main(["kg", "shout", "store"]) == 3 and capsys.readouterr().out == "STORE\n"  # beside the kg plugin's commands
    assert "command 'train' already exists" in caplog.text
    help_text = lccore.cli.build_parser().format_help()
    assert "greet" in help_text and "say hello" in help_text
    kg_help = subprocess.run([sys.executable, "-m", "lccore", "kg", "--help"], capture_output=True, text=True, timeout=120)
    assert kg_help.returncode == 0 and all(f"    {name} " in kg_help.stdout for name in ("import", "query", "build", "ask", "shout"))
    # an engine without the kg plugins offers no kg commands: they are the plugins', not the kernel's
    bare = lccore.Engine(entry_points=False)
    assert "\n    kg " in lccore.cli.build_parser().format_help() and "\n    kg " not in lccore.cli.build_parser(bare).format_help()
    assert main(["kg", "stats", "memory"], engine=bare) == 2
    assert "invalid choice: 'kg'" in capsys.readouterr().err


def test_lifecycle_observers_are_called_in_pluggy_order():
    calls = []

    def observer(name, **marks):
        module = types.ModuleType(name)

        @lccore.hookimpl(**marks)
        def on_train_end(run, metrics):
            calls.append(name)

        module.on_train_end = on_train_end
        return module

    plugins = [observer("last", trylast=True), observer("early"), observer("late"), observer("first", tryfirst=True)]
    lccore.Engine(entry_points=False, plugins=plugins).notify("on_train_end", run=None, metrics={})
    assert calls == ["first", "late", "early", "last"]


def test_plugins_load_in_entry_point_name_order():
    names = [name for name, info in lccore.Engine().plugins.items() if info.distribution == "lccore"]
    assert names == sorted(names)


def test_help_and_plugins_do_not_import_torch():
    code = (
        "import sys, io, contextlib\n"
        "from lccore.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['plugins', '--json'])\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_plugins_json_lists_every_component(capsys):
    assert main(["plugins", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["components"]["task"]["text_classification"] == ["text_classification"]
    assert report["components"]["head"]["sequence_classifier"] == ["text_classification"]
    assert set(report["components"]["optimizer"]) >= {"adamw", "sgd"}
    assert set(report["components"]) == set(lccore.COMPONENT_KINDS)


def test_every_hook_is_documented():
    from lccore import hookspecs

    names = list(hookspecs.COMPONENT_KINDS.values()) + list(hookspecs.LIFECYCLE_EVENTS) + list(hookspecs.EXTENSION_HOOKS)
    for name in names:
        function = getattr(hookspecs, name)
        assert hasattr(function, "lccore_spec"), name
        assert function.__doc__ and len(function.__doc__.split()) >= 10, f"{name} needs a docstring"


CLASHING_PLUGIN = """
    import lccore

    @lccore.hookimpl
    def register_tasks(register):
        register("text_classification", lambda: "not the task the run was trained with")

    @lccore.hookimpl
    def register_heads(register):
        register("sequence_classifier", lambda: "not the head either")

    @lccore.hookimpl
    def register_optimizers(register):
        register("adamw", lambda: "another adamw")
"""


def test_a_finished_run_keeps_loading_when_a_plugin_registering_its_names_is_installed(trained_run, tiny_config, site, tmp_path, capsys):
    """Issue 19: a second plugin registering the run's task, head and optimizer names broke
    `lccore.load`, `predict` and `evaluate` on runs already trained. Loading takes each component
    from the plugin the manifest records, and looks up no optimizer; a new training run still has
    to choose."""
    from lccore.cli import main

    before = lccore.load(trained_run.output_dir).predict(["a lovely film", "dull and boring"])
    make_distribution(site, "lccore-clash", {"lccore_clash": CLASHING_PLUGIN}, {"clash": "lccore_clash"})
    engine = lccore.Engine()
    assert engine.plugins["clash"].status == "loaded" and len(engine.owners("optimizer", "adamw")) == 2
    assert lccore.load(trained_run.output_dir).predict(["a lovely film", "dull and boring"]) == before
    source = tmp_path / "in.jsonl"
    source.write_text('"a lovely film"\n')
    assert main(["predict", str(trained_run.output_dir), "--input", str(source), "-q"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0]) == before[0]
    with pytest.raises(lccore.PluginError, match="task 'text_classification' is registered by two plugins"):
        lccore.train(tiny_config, tmp_path / "new", progress=False)
    # the run's own plugin gone and two others left: ambiguous, and said so
    with pytest.raises(lccore.PluginError, match="the run's own plugin 'lccore_tc_uninstalled' is not installed, and task 'text_classification' is registered by two"):
        engine.component("task", "text_classification", plugin="lccore_tc_uninstalled")
    # the run's own plugin gone and one other left: used, with a warning naming both
    capsys.readouterr()
    head = engine.component("head", "mean_pooled_classifier", plugin="lccore_heads_uninstalled")
    assert head.plugin == "text_classification"
    warning = capsys.readouterr().err
    assert "head 'mean_pooled_classifier' was given by plugin 'lccore_heads_uninstalled', which is not installed; using the one from 'text_classification'" in warning
    engine.component("head", "mean_pooled_classifier", plugin="lccore_heads_uninstalled")
    assert capsys.readouterr().err == ""  # said once


def test_an_entry_point_named_like_a_first_party_plugin_does_not_displace_it(site):
    """Issue 19: a third party's entry point `kg` replaced lccore's own (`lccore kg stats` then
    said "invalid choice"); lccore's stays, and the other is reported in one line naming both."""
    make_distribution(site, "acme-kg", {"acme_kg": GOOD_PLUGIN}, {"kg": "acme_kg"})
    engine = lccore.Engine()
    assert engine.plugins["kg"].distribution == "lccore" and engine.plugins["kg"].status == "loaded"
    other = engine.plugins["kg (acme-kg 1.2.3)"]
    assert other.status == "failed" and "\n" not in other.reason and "{" not in other.reason
    assert "already taken by lccore" in other.reason and "acme-kg 1.2.3 (acme_kg) is not loaded" in other.reason
    assert "echo_task" not in engine.names("task")


def test_a_module_both_installed_and_given_to_the_engine_is_one_plugin():
    import lccore_text_classification

    engine = lccore.Engine(plugins=[lccore_text_classification])
    assert [p.name for p in engine.plugins.values() if p.status != "loaded"] == []  # no 'failed' entry, no pluggy dump
    assert len(engine.owners("task", "text_classification")) == 1
    assert engine.create("task", "text_classification", {}) is not None


def test_a_factory_that_cannot_take_what_it_is_given_is_named_with_its_file_and_line():
    """Issue 19: a factory registered without options= that takes an argument was a bare TypeError."""
    module = types.ModuleType("lccore_wrong_factory")

    def make_task(options):  # registered without options=: lccore calls it with no argument
        return options

    @lccore.hookimpl
    def register_tasks(register):
        register("wrong_factory_task", make_task)

    module.register_tasks = register_tasks
    engine = lccore.Engine(entry_points=False, plugins=[module])
    with pytest.raises(lccore.PluginError) as caught:
        engine.create("task", "wrong_factory_task")
    message = str(caught.value)
    assert "task 'wrong_factory_task' of plugin 'lccore_wrong_factory'" in message and "registered without options=" in message
    assert f"{__file__}:" in message and "\n" not in message

    # a factory that returns nothing (a forgotten return) is named too, not an AttributeError later
    def forgot_return():
        lccore.Task()

    @lccore.hookimpl
    def register_heads(register):
        register("forgetful_head", forgot_return)

    other = types.ModuleType("lccore_forgetful")
    other.register_heads = register_heads
    engine = lccore.Engine(entry_points=False, plugins=[other])
    with pytest.raises(lccore.PluginError, match=r"^head 'forgetful_head' of plugin 'lccore_forgetful': its factory \(.*test_plugins.py:\d+\) returned None$"):
        engine.create("head", "forgetful_head")


def test_an_encode_that_drops_the_labels_is_named_with_its_plugin_and_line(tiny_model, sentiment_files, tmp_path):
    """Issue 19: a task whose encode forgets 'labels' trained into a TypeError deep inside accelerate."""
    import lccore_text_classification
    from lccore_text_classification.task import TextClassificationTask

    class LabelDroppingTask(TextClassificationTask):
        def encode(self, examples, tokenizer, max_length):
            return [{k: v for k, v in f.items() if k != "labels"} for f in super().encode(examples, tokenizer, max_length)]

    module = types.ModuleType("lccore_label_dropper")

    @lccore.hookimpl
    def register_tasks(register):
        register("label_dropper", LabelDroppingTask, options=lccore_text_classification.TextClassificationOptions)

    module.register_tasks = register_tasks
    engine = lccore.Engine(plugins=[module])
    config = {"model": tiny_model, "task": {"name": "label_dropper", "train": str(sentiment_files["train"])}, "train": {"max_steps": 2}}
    with pytest.raises(lccore.PluginError) as caught:
        lccore.train(config, tmp_path / "run", engine=engine, progress=False)
    message = str(caught.value)
    assert "task 'label_dropper' of plugin 'lccore_label_dropper'" in message and "no 'labels'" in message
    assert f"{__file__}:" in message and "\n" not in message
