"""The report's drawing: the training-curves figure (one legend, a variant's colour, a
figure reused between studies giving the pixels of a new one), the text cache giving plain
Agg's pixels (suite/report/agg.py) and the garbage-collector settings a report runs under
(suite/report/render.py `libraries_out_of_gc`)."""

import pytest

from suite.report import render_report


def test_training_curves_keep_a_variants_colour_and_draw_one_legend_when_the_panels_agree(tmp_path, monkeypatch):
    import pandas as pd

    import suite.report.figures as figures

    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, path: drawn.append(fig) or path)
    rows = [(v, s, k, e, 1.0 + e) for v in ("a", "b") for s in (0, 1) for k in ("val/mpjpe_mm", "train/loss/total")
            for e in (1, 2, 3)]
    labels = {"a": "A", "b": "B"}
    both = pd.DataFrame(rows, columns=["variant", "seed", "key", "step", "value"])
    figures.plot_training_curves(both, labels, "s", "scale smoke", tmp_path / "x.png", floors={"linear-lift": 3.0})
    val, loss = drawn[-1].axes
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["A (n=2)", "B (n=2)"]
    assert [t.get_text() for t in val.get_legend().get_texts()] == ["linear lift (floor): 3.0 mm"]  # variants once

    only_b_loss = both[~((both["variant"] == "a") & (both["key"] == "train/loss/total"))]
    figures.plot_training_curves(only_b_loss, labels, "s", "scale smoke", tmp_path / "x.png")
    val, loss = drawn[-1].axes
    colour = {line.get_label(): line.get_color() for ax in (val, loss) for line in ax.get_lines()}
    assert [line.get_color() for line in loss.get_lines()] == [colour["B (n=2)"]] != [colour["A (n=2)"]]
    assert [t.get_text() for t in val.get_legend().get_texts()] == ["A (n=2)", "B (n=2)"]  # panels differ: each its own
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["B (n=2)"]


def _png_pixels(path):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path))


def test_training_curves_on_a_reused_figure_are_the_pixels_of_a_new_one(tmp_path):
    """A report draws every study's training curves on one figure, cleared in between: what
    one study drew (lines, bands, floors, legends, an empty panel's text, limits set by the
    floors) is gone, the next study's PNG is the one a new figure gives."""
    import pandas as pd

    import suite.report.figures as figures

    def history(variants, scale, keys=("val/mpjpe_mm", "train/loss/total")):
        rows = [(v, s, k, e, scale * (10.0 + e + s + i)) for i, v in enumerate(variants) for s in (0, 1) for k in keys
                for e in (1, 2, 3)]
        return pd.DataFrame(rows, columns=["variant", "seed", "key", "step", "value"])

    labels = {"a": "A", "b": "B", "c": "C"}
    first = (history(("a", "b", "c"), 50.0), labels, "one", "scale cpu")
    second = (history(("b",), 1.0, keys=("val/mpjpe_mm",)), labels, "two", "scale smoke")  # no loss: an empty panel
    canvas = figures.CurvesFigure()
    figures.plot_training_curves(*first, tmp_path / "one.png", floors={"linear-lift": 900.0}, canvas=canvas)
    reused = figures.plot_training_curves(*second, tmp_path / "reused.png", canvas=canvas)
    new = figures.plot_training_curves(*second, tmp_path / "new.png")
    assert (_png_pixels(reused) == _png_pixels(new)).all()
    assert not (_png_pixels(tmp_path / "one.png") == _png_pixels(new)).all()
    val, loss = canvas.axes
    assert [t.get_text() for t in loss.texts] == ["no train/loss/total logged"]
    assert [t.get_text() for t in val.get_legend().get_texts()] == ["B (n=2)"]


def test_figures_drawn_with_the_text_cache_have_the_pixels_of_plain_agg():
    """Text sizes, layouts, line heights and glyph bitmaps reused from one figure to the next
    (other positions, sizes, a rotated label, a fallback glyph) give plain Agg's pixels."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from suite.report.agg import SUPPORTED, Canvas, text_cache
    from suite.report.figures import figure

    def pixels(shift: float, plain: bool):
        fig = figure((4 + shift, 3), left=0.15 + shift / 10, bottom=0.2)
        if plain:  # replace the report's canvas with matplotlib's own
            FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.plot([0, 1, 2], [3.0, 1.5 + shift, 2.0], label="MotionBERT-Lite (n=21) ×1/8 →")
        ax.set_xlabel("epoch", fontsize=9 + shift)
        ax.set_ylabel("validation MPJPE (mm)")
        ax.set_title("Training curves: one", fontsize=10)
        ax.legend(fontsize=7)
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba()).copy()

    assert SUPPORTED and isinstance(figure((1, 1)).canvas, Canvas)
    with text_cache() as cache:
        cached = [pixels(shift, plain=False) for shift in (0.0, 0.37, 0.0, 1.0)]
    assert cache.glyphs and cache.layouts and cache.heights
    for shift, drawn in zip((0.0, 0.37, 0.0, 1.0), cached):
        assert (drawn == pixels(shift, plain=True)).all()


def test_the_libraries_are_out_of_the_collectors_passes_only_while_a_report_runs(tmp_path, monkeypatch):
    """The objects that exist before a report are frozen while it runs and unfrozen after,
    the young ones collected in larger batches, all as before after it, also when it fails;
    a process that froze objects itself keeps them frozen and its thresholds."""
    import gc

    import suite.report.render as render

    seen, threshold = [], gc.get_threshold()

    def load_runs(tracker, names):
        seen.append(gc.get_freeze_count())
        seen.append(gc.get_threshold())
        raise RuntimeError("store down")

    monkeypatch.setattr(render, "load_runs", load_runs)
    monkeypatch.setattr(render, "as_tracker", lambda t: t)
    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError, match="store down"):
        render_report(object(), None, tmp_path)
    assert seen[0] > 0 and gc.get_freeze_count() == 0
    assert seen[1] == (render.YOUNG_OBJECTS, *threshold[1:]) and gc.get_threshold() == threshold
    seen.clear()
    gc.freeze()
    try:
        young = [[] for _ in range(10_000)]  # what a second freeze would take in
        frozen = gc.get_freeze_count()
        with pytest.raises(RuntimeError):
            render_report(object(), None, tmp_path)
        # Neither frozen again nor unfrozen; frozen objects may still die by their
        # reference count meanwhile (CI saw two go), so the count may only fall a little.
        assert seen[1] == threshold and frozen - 1_000 < seen[0] <= frozen
        assert frozen - 1_000 < gc.get_freeze_count() <= frozen
        del young
    finally:
        gc.unfreeze()
