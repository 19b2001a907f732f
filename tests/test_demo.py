"""``sparsefusion demo`` on two validation objects: data, evaluation, report, skipped methods."""

from pipelines.cli import main


def test_demo_writes_a_report(tmp_path, capsys, monkeypatch):
    import vldm.load

    monkeypatch.setattr(vldm.load, "DEMO_CHECKPOINT", tmp_path / "no-model")  # as on a clone without models
    out = tmp_path / "demo"
    assert main(["demo", f"root={tmp_path / 'data'}", "objects=800-801", "image_size=32",
                 "methods=[nearest-view,eft]", f"out={out}"]) == 0
    text = capsys.readouterr().out
    assert "skipping eft: no VLDM model" in text and "total" in text
    report = (out / "report.md").read_text()
    assert "| nearest-view | 2 |" in report and "| eft |" not in report
