"""``sparsefusion demo`` on two validation objects: data, comparison, report, skipped methods, step times."""

from pipelines.cli import main


def test_demo_writes_a_report(tmp_path, capsys, monkeypatch):
    import vldm.load

    monkeypatch.setattr(vldm.load, "DEMO_CHECKPOINT", tmp_path / "no-model")  # as on a clone without models
    out = tmp_path / "demo"
    assert main(["demo", f"root={tmp_path / 'data'}", "objects=800-801", "image_size=32",
                 "methods=[nearest-view,eft]", f"out={out}"]) == 0
    text = capsys.readouterr().out
    assert "skipping eft: no VLDM model" in text and "total" in text and "compare: nearest-view" in text
    report = (out / "compare.md").read_text()
    assert "| nearest-view | 2 |" in report and "| eft |" not in report and "## Skipped" in report
    assert (out / "grid.png").is_file() and f"report in {out / 'compare.md'}" in text
