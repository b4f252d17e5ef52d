from lccore.testing import check_plugin


def test_plugin_passes_the_lccore_conformance_kit():
    report = check_plugin("lccore_plugin_name")
    assert report.passed
