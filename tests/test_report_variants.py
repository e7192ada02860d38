"""The compression variants section: Pareto plot, sortable table (sorted in headless Chromium)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import browser_result

from kwscompress.report import write_report
from kwscompress.run import Run


def _row(variant_id: str, recipe: str, accuracy: float, weight_bytes: int, **extra: Any) -> dict:
    return {
        "id": variant_id,
        "recipe": recipe,
        "status": "ok",
        "error": None,
        "steps": [] if recipe == "float" else [{"kind": "quantize", "method": recipe}],
        "accuracy": {"training": accuracy, "validation": accuracy, "testing": accuracy},
        "parameters": 16652,
        "nonzero_parameters": 16652,
        "macs": 336000,
        "weight_bits": 32,
        "weight_bytes": weight_bytes,
        "host_latency_ms": 0.05,
        **extra,
    }


@pytest.fixture
def run(tmp_path: Path) -> Run:
    run = Run(tmp_path / "run")
    run.results["variants"] = [
        _row("float", "float", 0.90, 66608),
        _row("ptq-2b", "ptq", 0.25, 4200),
        _row("ptq-8b", "ptq", 0.895, 16700, deploy={"tflite_bytes": 19000}),
        _row("qat-4b", "qat", 0.88, 8400),
        {
            "id": "bad-0.5",
            "recipe": "bad",
            "status": "failed",
            "error": {"plugin": "toys", "component": "pruner 'toy'", "message": "boom"},
            "steps": [],
        },
    ]
    run.save()
    return run


def test_section_shows_pareto_table_and_failures(run: Run) -> None:
    write_report(run)
    page = (run.path / "report.html").read_text()
    assert 'id="variants"' in page
    assert (run.path / "plots" / "variants-pareto.png").is_file()
    assert '<table class="sortable">' in page
    # Every row, the failed one flagged and explained.
    for variant in ("float", "ptq-2b", "ptq-8b", "qat-4b", "bad-0.5"):
        assert f"<code>{variant}</code>" in page
    assert "pruner &#39;toy&#39; from plugin toys failed: boom" in page
    markdown = (run.path / "report.md").read_text()
    assert "| ptq-8b |" in markdown and "19,000" in markdown


_CLICK_SCRIPT = """
<script>
window.addEventListener("load", () => {
  const table = document.querySelector("#variants table.sortable");
  const header = [...table.querySelectorAll("th")].find((th) => th.textContent === "test");
  const order = () => [...table.tBodies[0].rows].map((r) => r.cells[0].innerText.split("\\n")[0]);
  header.click();
  const ascending = order();
  header.click();
  const descending = order();
  const out = document.createElement("pre");
  out.id = "kws-sort";
  out.textContent = JSON.stringify({ascending, descending,
    state: header.getAttribute("aria-sort")});
  document.body.appendChild(out);
});
</script>"""


def test_table_sorts_in_headless_chromium(run: Run, tmp_path: Path) -> None:
    write_report(run)
    page = (run.path / "report.html").read_text().replace("</body>", _CLICK_SCRIPT + "</body>")
    result = browser_result(page, tmp_path, "kws-sort")
    # Numbers sort as numbers (25 % before 88 %), the failed row's empty cell goes last.
    assert result["ascending"] == ["ptq-2b", "qat-4b", "ptq-8b", "float", "bad-0.5"]
    assert result["descending"] == ["float", "ptq-8b", "qat-4b", "ptq-2b", "bad-0.5"]
    assert result["state"] == "descending"
