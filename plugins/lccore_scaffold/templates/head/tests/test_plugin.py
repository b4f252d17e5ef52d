from lccore.testing import check_plugin


def test_plugin_passes_the_lccore_conformance_kit():
    # No task uses the head by default: the kit trains it with the first-party text_classification task.
    report = check_plugin("lccore_plugin_name", head_tasks={"plugin_name": "text_classification"})
    assert not report.skipped
    assert ("head", "plugin_name", "trains one step") in {(c.kind, c.name, c.check) for c in report.passed}
