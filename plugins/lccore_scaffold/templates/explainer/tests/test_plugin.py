from lccore.testing import check_plugin


def test_plugin_passes_the_lccore_conformance_kit():
    report = check_plugin("lccore_plugin_name")
    assert not report.skipped
    assert ("explainer", "plugin_name", "one attribution per word") in {(c.kind, c.name, c.check) for c in report.passed}
