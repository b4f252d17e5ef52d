from lccore.testing import check_plugin


def test_plugin_passes_the_lccore_conformance_kit():
    report = check_plugin("lccore-example-plugin")
    assert [c.name for c in report.passed] == ["lccore_word_blocklist", "word_blocklist"]


def test_redacts_a_listed_word():
    from lccore_word_blocklist import WordBlocklist, WordBlocklistOptions

    decision = WordBlocklist(WordBlocklistOptions(words=["awful"])).inspect("An Awful plot", "input")
    assert decision["decision"] == "redact" and decision["redacted"] == "An ***** plot"
