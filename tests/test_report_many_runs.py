"""The report over 552 runs (tests/report_store.py `many_runs`: every paper study at scale
cpu with 21 seeds and both floors, and at smoke with one seed): every cell reads all 21
seeds, with the mean and std worked out from the formula the store was written with; and a
second report keeps each figure whose inputs did not change. How long the report takes is a
benchmark (tests/benchmarks/test_bench_report.py), not a test.
"""

import statistics

import pytest
from report_store import FLOOR_VALUES, many_runs, many_runs_value

from suite.registry import paper_studies
from suite.report import render_report

SEEDS = 21


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("big")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        settings, _, runs = many_runs(root, seeds=SEEDS)
    return root, settings, runs


@pytest.fixture(autouse=True)
def own_tracking_uri(monkeypatch):
    """A Tracker exports MLFLOW_TRACKING_URI, which load_settings prefers: drop it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_500_runs_report_every_cell_over_all_21_seeds(big_store):
    root, settings, runs = big_store
    assert runs >= 500
    result = render_report(settings, None, root / "results")
    for study in paper_studies():
        assert result.scales[study.name] == "cpu"  # 21 finished runs per variant there against 1 at smoke
        frame = result.frames[study.name]
        model = frame[frame["kind"] == "model"]
        # every cell but the blank ones (answered by no variant: frame-rate's streamed rows)
        assert len(model) == len(study.table.rows) * len(study.table.columns) - len(study.table.blank)
        for cell in model.itertuples():
            # by hand: the mean of 40 + k + 0.1 s over s = 0..20 is 40 + k + 1.0; the std 0.1 std(0..20)
            assert cell.n == SEEDS, (study.name, cell.row, cell.column)
            assert cell.mean == pytest.approx(many_runs_value(cell.condition, 0) + 0.1 * (SEEDS - 1) / 2)
            assert cell.std == pytest.approx(0.1 * statistics.stdev(range(SEEDS)))
        floors = frame[frame["kind"] == "floor"]
        columns = len(study.table.columns)
        assert sorted(floors["mean"]) == sorted(list(FLOOR_VALUES.values()) * columns)
    # no checkpoints and no benchmark file in this store: noted, not fatal
    assert "checkpoint" in result.skipped["skeletons"] and "make bench" in result.skipped["latency"]
    declared = {f.name for s in paper_studies() for f in s.figures}
    assert set(result.figures) == declared - {"skeletons"} | {f"training:{s.name}" for s in paper_studies()}
    readme = result.readme.read_text()
    assert "Not drawn:" in readme and "## Speed" not in readme and "| 21 in every cell |" in readme


def _redrawn(said: list[str]) -> set[str]:
    """The figures a report drew again, from its 'figure <name>: <path>' lines."""
    return {line.removeprefix("figure ").split(": ")[0] for line in said
            if line.startswith("figure ") and not line.endswith(")")}


def test_a_figure_is_redrawn_only_when_what_it_shows_changed(big_store, tmp_path, monkeypatch):
    """A second report over the same runs keeps every PNG (same bytes, same mtime) and says
    "unchanged"; one study read at another scale redraws that study's figures only; a change
    in the code redraws everything."""
    from PIL import Image

    from suite.report import unchanged

    _, settings, _ = big_store
    studies = ["context-length", "gdssm-aggregation"]
    said = []
    first = render_report(settings, studies, tmp_path, say=said.append)
    drawn = {k: (p.read_bytes(), p.stat().st_mtime_ns) for k, p in first.figures.items()}
    assert set(drawn) == {"context-length", "aggregation", "training:context-length", "training:gdssm-aggregation"}
    assert _redrawn(said) == set(drawn)
    with Image.open(first.figures["context-length"]) as png:
        assert len(png.text[unchanged.PNG_KEY]) == 64  # the digest, in the PNG
    said.clear()
    again = render_report(settings, studies, tmp_path, say=said.append)
    assert {k: (p.read_bytes(), p.stat().st_mtime_ns) for k, p in again.figures.items()} == drawn
    assert sum(line.endswith("(unchanged)") for line in said) == len(drawn) and _redrawn(said) == set()

    said.clear()
    render_report(settings, ["context-length"], tmp_path, scale="smoke", say=said.append)
    assert _redrawn(said) == {"context-length", "training:context-length"}
    said.clear()
    render_report(settings, studies, tmp_path, say=said.append)  # context-length back at cpu
    assert _redrawn(said) == {"context-length", "training:context-length"}

    said.clear()
    unchanged.code_digest.cache_clear()
    monkeypatch.setattr(unchanged, "PACKAGES", ("suite",))  # as if the code had changed
    render_report(settings, studies, tmp_path, say=said.append)
    unchanged.code_digest.cache_clear()
    assert _redrawn(said) == set(drawn)
