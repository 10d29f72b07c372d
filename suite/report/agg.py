"""Agg with the text work of a report done once: shaping, measuring and glyph bitmaps cached.

matplotlib's Agg renderer shapes every string it measures or draws (libraqm, 0.2 to 1 ms a
label) and renders each glyph again, and its own cache of text sizes lives and dies with one
figure's renderer. A report draws the same labels (tick values, axis labels, legend
entries, titles) in figure after figure, a third of its time. Within `text_cache()` (one
per report, suite/report/drawing.py) the figures of `suite.report.figures.figure` keep, for
the report, each font's line height, each string's size and layout per font, and each
glyph's bitmap per font, size,
angle and sub-pixel offset, then place them where the text is drawn: the pixels are those of
plain Agg (tests/test_report_drawing.py compares them); outside it they draw as plain Agg.
The matplotlib private API this overrides is checked once; without it (another version),
plain Agg.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg, get_hinting_flag
from matplotlib.font_manager import fontManager, get_font
from matplotlib.ft2font import FT2Font, RenderMode

SUPPORTED = all(hasattr(cls, name) for cls, name in (
    (RendererAgg, "_draw_text_glyphs_and_boxes"), (RendererAgg, "_prepare_font"),
    (FT2Font, "_layout"), (FT2Font, "_render_glyph"), (FT2Font, "_set_transform")))


@dataclass
class TextCache:
    sizes: dict = field(default_factory=dict)  # (text, font, dpi, hinting) -> (width, height, descent)
    layouts: dict = field(default_factory=dict)  # (text, font, dpi, hinting, features, language) -> glyphs
    glyphs: dict = field(default_factory=dict)  # (font, size, dpi, glyph, angle, sub-pixel x, y, ...) -> bitmap
    heights: dict = field(default_factory=dict)  # (font, dpi) -> (ascent, descent, line gap)


_cache: contextvars.ContextVar[TextCache | None] = contextvars.ContextVar("text_cache", default=None)


@contextlib.contextmanager
def text_cache() -> Iterator[TextCache]:
    """Figures drawn inside share one cache of text sizes, layouts and glyph bitmaps."""
    cache = TextCache()
    token = _cache.set(cache)
    try:
        yield cache
    finally:
        _cache.reset(token)


class CachedTextRenderer(RendererAgg):
    """RendererAgg whose text goes through the current `text_cache()` (plain Agg outside one)."""

    def get_text_width_height_descent(self, s, prop, ismath):
        cache = _cache.get()
        if cache is None or ismath:
            return super().get_text_width_height_descent(s, prop, ismath)
        key = (s, hash(prop), self.dpi, get_hinting_flag())
        size = cache.sizes.get(key)
        if size is None:
            size = cache.sizes[key] = super().get_text_width_height_descent(s, prop, ismath)
        return size

    def _get_font_height_metrics(self, prop):
        """(ascent, descent, line gap) of the font in pixels, as matplotlib's Text computes them
        without this hook (text.py `_get_layout`), once per font; (None,) * 3: Text's own."""
        cache = _cache.get()
        if cache is None:
            return None, None, None
        key = (hash(prop), self.dpi)
        if key not in cache.heights:
            font = get_font(fontManager._find_fonts_by_props(prop))
            cache.heights[key] = None, None, None
            for table, gap, ascent, descent in (("OS/2", "sTypoLineGap", "sTypoAscender", "sTypoDescender"),
                                                ("hhea", "lineGap", "ascent", "descent")):
                values = font.get_sfnt_table(table)
                if values is not None:
                    scale = 1 / font.get_sfnt_table("head")["unitsPerEm"] * prop.get_size_in_points() * self.dpi / 72
                    cache.heights[key] = values[ascent] * scale, -values[descent] * scale, values[gap] * scale
                    break
        return cache.heights[key]

    def draw_text(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
        cache = _cache.get()
        if cache is None or ismath:
            return super().draw_text(gc, x, y, s, prop, angle, ismath, mtext)
        features = mtext.get_fontfeatures() if mtext is not None else None
        language = mtext.get_language() if mtext is not None else None
        flags = get_hinting_flag()
        key = (s, hash(prop), self.dpi, flags, features, language)
        items = cache.layouts.get(key)
        if items is None:
            font = self._prepare_font(prop)
            items = cache.layouts[key] = [(item.ft_object, item.glyph_index, item.x, item.y) for item in
                                          font._layout(s, flags=flags, features=features, language=language)]
        size = prop.get_size_in_points()
        self._draw_text_glyphs_and_boxes(gc, x, y, angle, ((font, size, glyph, 0, 1, dx, dy)
                                                           for font, glyph, dx, dy in items), [])

    def _draw_text_glyphs_and_boxes(self, gc, x, y, angle, glyphs, boxes):
        """As RendererAgg's, each glyph rendered once per font, size, angle and 1/64-pixel
        offset: FreeType renders a glyph moved by whole pixels as the same bitmap, moved."""
        cache = _cache.get()
        if cache is None:
            return super()._draw_text_glyphs_and_boxes(gc, x, y, angle, glyphs, boxes)
        cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        flags, antialiased = get_hinting_flag(), gc.get_antialiased()
        matrices = {}  # (slant, extend) -> FreeType's transform
        for font, size, glyph, slant, extend, dx, dy in glyphs:  # dy is upwards
            if (slant, extend) not in matrices:
                matrices[slant, extend] = (0x10000 * np.array([[cos, -sin], [sin, cos]])
                                           @ [[extend, extend * slant], [0, 1]]).round().astype(int)
            matrix = matrices[slant, extend]
            # FreeType's y is upwards; offsets in 1/64 pixel, split into whole pixels and the rest
            px, fx = divmod(round(0x40 * (x + dx * cos - dy * sin)), 0x40)
            py, fy = divmod(round(0x40 * (self.height - y + dx * sin + dy * cos)), 0x40)
            key = (font, size, self.dpi, glyph, angle, slant, extend, fx, fy, flags, antialiased)
            bitmap = cache.glyphs.get(key)
            if bitmap is None:
                font.set_size(size, self.dpi)
                font._set_transform(matrix, [fx, fy])
                rendered = font._render_glyph(glyph, flags, RenderMode.NORMAL if antialiased else RenderMode.MONO)
                buffer = rendered.buffer
                if not antialiased:
                    buffer *= 0xff
                bitmap = cache.glyphs[key] = (buffer, rendered.left, rendered.top)
            buffer, left, top = bitmap
            # draw_text_image's y is downwards & the bitmap bottom side
            self._renderer.draw_text_image(buffer, left + px, int(self.height) - (top + py) + buffer.shape[0], 0, gc)
        if boxes:
            super()._draw_text_glyphs_and_boxes(gc, x, y, angle, (), boxes)


class Canvas(FigureCanvasAgg):
    """FigureCanvasAgg drawing with `CachedTextRenderer`."""

    def get_renderer(self):
        w, h = self.get_width_height(physical=True)
        key = w, h, self.figure.dpi
        if self._lastKey != key:
            self.renderer = CachedTextRenderer(w, h, self.figure.dpi)
            self._lastKey = key
        return self.renderer


def attach(fig) -> None:
    """Draw `fig` (a matplotlib Figure) with `Canvas` where this matplotlib supports it."""
    if SUPPORTED:
        Canvas(fig)
