from lccore.testing import check_plugin

from lccore_plugin_name import PluginNameOptions, PluginNamePolicy


def test_plugin_passes_the_lccore_conformance_kit():
    report = check_plugin("lccore_plugin_name")
    assert not report.skipped
    assert ("ethics_policy", "plugin_name", "valid decisions at every stage") in {(c.kind, c.name, c.check) for c in report.passed}


def test_redacts_what_a_pattern_matches():
    decision = PluginNamePolicy(PluginNameOptions()).inspect("account 1234567890, thanks", "input")
    assert decision["decision"] == "redact"
    assert decision["redacted"] == "account [REDACTED], thanks"
