"""Small image helpers for the tools: colour maps, heat-map overlays, labelled grids, GIFs.

Pillow and numpy only (matplotlib is not a dependency). The colour maps are piecewise-linear
approximations of matplotlib's perceptually uniform maps, sampled at 11 anchors; that is close enough
for reading a picture and keeps the look familiar.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# RGB anchors at 0.0, 0.1, ..., 1.0.
_ANCHORS = {
    'viridis': [(68, 1, 84), (72, 35, 116), (64, 67, 135), (52, 94, 141), (41, 120, 142), (32, 144, 140),
                (34, 167, 132), (68, 190, 112), (121, 209, 81), (189, 222, 38), (253, 231, 37)],
    'inferno': [(0, 0, 4), (22, 11, 57), (66, 10, 104), (106, 23, 110), (147, 38, 103), (188, 55, 84),
                (221, 81, 58), (243, 120, 25), (252, 165, 10), (246, 215, 70), (252, 255, 164)],
}

BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)


@functools.lru_cache(maxsize=None)
def colormap_lut(name: str = 'viridis') -> np.ndarray:
    """A (256, 3) uint8 lookup table for colour map ``name`` ('viridis' or 'inferno')."""
    if name not in _ANCHORS:
        raise ValueError(f"colour map {name!r}: expected one of {sorted(_ANCHORS)}")
    anchors = np.asarray(_ANCHORS[name], dtype=np.float64)
    pos = np.linspace(0.0, 1.0, len(anchors))
    x = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(x, pos, anchors[:, c]) for c in range(3)], axis=1)
    return np.round(lut).astype(np.uint8)


def apply_colormap(values: np.ndarray, name: str = 'viridis') -> np.ndarray:
    """Map values in [0, 1] (clipped; NaN counts as 0) to RGB uint8 of shape ``values.shape + (3,)``."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    idx = np.clip(np.round(v * 255.0), 0, 255).astype(np.int64)
    return colormap_lut(name)[idx]


def resize_bilinear(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Upsample a 2-D float map to ``size`` = (height, width) with bilinear interpolation."""
    img = Image.fromarray(np.asarray(values, dtype=np.float32), mode='F')
    return np.asarray(img.resize((size[1], size[0]), Image.BILINEAR), dtype=np.float32)


def overlay_heatmap(frame: np.ndarray, heat: np.ndarray, alpha: float = 0.6,
                    cmap: str = 'viridis', gray: bool = True) -> np.ndarray:
    """Blend a heat map over an RGB frame.

    Args:
        frame: (H, W, 3) uint8 image.
        heat: (h, w) map already scaled to [0, 1]; upsampled bilinearly to (H, W).
        alpha: weight of the heat map colour (0 = frame only, 1 = heat map only).
        cmap: colour map name.
        gray: blend over the frame's luminance, so that its colours do not mix with the map's.
    """
    h, w = frame.shape[:2]
    colour = apply_colormap(resize_bilinear(heat, (h, w)), cmap).astype(np.float32)
    base = frame.astype(np.float32)
    if gray:
        base = np.repeat((base @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None], 3, axis=-1)
    out = (1.0 - alpha) * base + alpha * colour
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def font(size: int = 12) -> ImageFont.ImageFont:
    """Pillow's built-in font at ``size`` pixels (a scalable font when Pillow has FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font only
        return ImageFont.load_default()


def text_size(text: str, fnt: ImageFont.ImageFont) -> tuple[int, int]:
    """(width, height) of ``text`` drawn with ``fnt``."""
    left, top, right, bottom = ImageDraw.Draw(Image.new('RGB', (1, 1))).textbbox((0, 0), text, font=fnt)
    return right - left, bottom - top


def fit_text(text: str, max_width: int, fnt: ImageFont.ImageFont) -> str:
    """``text`` shortened with an ellipsis so that it is at most ``max_width`` pixels wide."""
    if text_size(text, fnt)[0] <= max_width:
        return text
    while text and text_size(text + '...', fnt)[0] > max_width:
        text = text[:-1]
    return text + '...'


def wrap_text(text: str, max_width: int, fnt: ImageFont.ImageFont) -> list:
    """``text`` broken into lines of at most ``max_width`` pixels, at spaces (a single word wider than that
    is shortened with :func:`fit_text`); nothing is cut off."""
    lines: list = []
    for word in text.split(' '):
        if lines and text_size(lines[-1] + ' ' + word, fnt)[0] <= max_width:
            lines[-1] += ' ' + word
        else:
            lines.append(fit_text(word, max_width, fnt))
    return lines


def colorbar(width: int, height: int, cmap: str = 'viridis', low: str = 'low', high: str = 'high',
             font_size: int = 11, start: float = 0.0, stop: float = 1.0) -> Image.Image:
    """A horizontal colour bar with end labels, e.g. for the legend under a heat-map grid.

    ``start``/``stop`` are the colour-map positions at the left/right end (reversed maps: 1, 0).
    """
    fnt = font(font_size)
    lw, _ = text_size(low, fnt)
    hw, _ = text_size(high, fnt)
    bar_w = max(8, width - lw - hw - 16)
    img = Image.new('RGB', (width, height), BACKGROUND)
    bar = apply_colormap(np.tile(np.linspace(start, stop, bar_w), (max(1, height - 6), 1)), cmap)
    img.paste(Image.fromarray(bar), (lw + 8, 3))
    draw = ImageDraw.Draw(img)
    draw.text((0, height // 2), low, fill=TEXT, font=fnt, anchor='lm')
    draw.text((width, height // 2), high, fill=TEXT, font=fnt, anchor='rm')
    return img


def labelled_grid(cells: Sequence[Sequence[np.ndarray]], col_titles: Sequence[str],
                  row_titles: Optional[Sequence[str]] = None, title: str = '',
                  footer: Optional[Image.Image] = None, pad: int = 4, font_size: int = 12) -> Image.Image:
    """Arrange equally sized RGB images in a grid with column titles, row titles and an optional title.

    Args:
        cells: rows of (H, W, 3) uint8 images, all the same size.
        col_titles: one title per column, drawn above the first row.
        row_titles: one short label per row, drawn left of it (None: no label column).
        title: text above everything, '\n' separates lines (empty: none).
        footer: an image pasted centred below the grid (e.g. a colour bar).
        pad: pixels between cells.
        font_size: text size in pixels.
    """
    if not cells or not cells[0]:
        raise ValueError("labelled_grid: no images to arrange")
    h, w = cells[0][0].shape[:2]
    n_rows, n_cols = len(cells), len(cells[0])
    fnt = font(font_size)
    line_h = text_size('Ag', fnt)[1] + 6
    label_w = (max(text_size(t, fnt)[0] for t in row_titles) + 2 * pad) if row_titles else 0
    title_lines = title.split('\n') if title else []
    top = line_h * (1 + len(title_lines))
    grid_w = label_w + n_cols * w + (n_cols + 1) * pad
    grid_h = top + n_rows * h + (n_rows + 1) * pad
    total_h = grid_h + (footer.height + pad if footer is not None else 0)
    img = Image.new('RGB', (grid_w, total_h), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(title_lines):
        draw.text((pad, 3 + i * line_h), fit_text(line, grid_w - 2 * pad, fnt), fill=TEXT, font=fnt)
    for c, name in enumerate(col_titles):
        x = label_w + pad + c * (w + pad) + w // 2
        draw.text((x, top - line_h // 2), fit_text(name, w, fnt), fill=TEXT, font=fnt, anchor='mm')
    for r, row in enumerate(cells):
        if len(row) != n_cols:
            raise ValueError(f"labelled_grid: row {r} has {len(row)} images, expected {n_cols}")
        y = top + pad + r * (h + pad)
        if row_titles:
            draw.text((pad, y + h // 2), row_titles[r], fill=TEXT, font=fnt, anchor='lm')
        for c, cell in enumerate(row):
            if cell.shape[:2] != (h, w):
                raise ValueError(f"labelled_grid: image ({r}, {c}) is {cell.shape[:2]}, expected {(h, w)}")
            img.paste(Image.fromarray(cell), (label_w + pad + c * (w + pad), y))
    if footer is not None:
        img.paste(footer, ((grid_w - footer.width) // 2, grid_h))
    return img


def save_gif(frames: Sequence[Image.Image], path: str, duration_ms: int = 250) -> None:
    """Write an endlessly looping animated GIF (adaptive palette per frame)."""
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    pal = [f.convert('P', palette=Image.ADAPTIVE, colors=255) for f in frames]
    pal[0].save(path, save_all=True, append_images=pal[1:], duration=duration_ms, loop=0, disposal=2)


def _time_step(duration: float, width: int, min_px: int = 60) -> float:
    """A round tick step in seconds (1, 2, 5 x 10^k) that leaves at least ``min_px`` pixels between ticks."""
    target = max(duration * min_px / max(width, 1), 1e-6)
    base = 10.0 ** np.floor(np.log10(target))
    for m in (1, 2, 5, 10):
        if m * base >= target:
            return float(m * base)
    return float(10 * base)


def format_seconds(t: float) -> str:
    """``42s``, ``1:05``, ``1:02:03`` (tick labels); fractions of a second only when the tick needs them."""
    if t < 60:
        return f"{t:g}s" if t != int(t) else f"{int(t)}s"
    t = int(round(t))
    h, rest = divmod(t, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def probability_timeline(times: np.ndarray, probs: np.ndarray, names: Sequence[str], duration: float,
                         title: str = '', width: int = 960, row_height: int = 24, font_size: int = 12,
                         cmap: str = 'viridis') -> Image.Image:
    """A timeline of class probabilities over a video: one strip per class, time on x.

    Args:
        times: (W, 2) cell start/end in seconds of each window (cells do not overlap; gaps stay white).
        probs: (W, K) probability of each shown class in each window.
        names: the K class names, one strip each, top to bottom.
        duration: the video's length in seconds (the x-axis runs from 0 to it).
        title: text above the strips.
        width: image width in pixels.
        row_height: strip height in pixels.
        font_size: text size.
        cmap: colour map of the probability (0 dark, 1 bright); a legend is drawn below.

    The window where a class is the top-1 of all shown classes is outlined, so the sequence of
    predicted actions reads from left to right without decoding colours.
    """
    times = np.asarray(times, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(names) or times.shape != (probs.shape[0], 2):
        raise ValueError(f"probability_timeline: times {times.shape}, probs {probs.shape} and {len(names)} names "
                         f"do not fit together")
    fnt = font(font_size)
    pad = 8
    line_h = text_size('Ag', fnt)[1] + 6
    label_w = min(width // 3, max(text_size(n, fnt)[0] for n in names) + 2 * pad) if names else 0
    plot_x0, plot_x1 = label_w + pad, width - pad
    plot_w = plot_x1 - plot_x0
    top = pad + (line_h if title else 0)
    rows_h = len(names) * (row_height + 2)
    axis_h = line_h + 6
    legend_h = 22
    height = top + rows_h + axis_h + legend_h + pad
    img = Image.new('RGB', (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((pad, pad), fit_text(title, width - 2 * pad, fnt), fill=TEXT, font=fnt)
    duration = max(float(duration), float(times[:, 1].max()) if len(times) else 0.0, 1e-6)

    def x_of(t: float) -> int:
        return plot_x0 + int(round(plot_w * min(max(t, 0.0), duration) / duration))

    colours = apply_colormap(probs, cmap)
    winners = probs.argmax(axis=1) if probs.size else np.zeros(0, np.int64)
    for r, name in enumerate(names):
        y0 = top + r * (row_height + 2)
        draw.text((pad, y0 + row_height // 2), fit_text(name, label_w - pad, fnt), fill=TEXT, font=fnt, anchor='lm')
        draw.rectangle([plot_x0, y0, plot_x1 - 1, y0 + row_height - 1], fill=(235, 235, 235))
        for w in range(len(times)):
            x0, x1 = x_of(times[w, 0]), max(x_of(times[w, 0]) + 1, x_of(times[w, 1]))
            draw.rectangle([x0, y0, x1 - 1, y0 + row_height - 1], fill=tuple(int(c) for c in colours[w, r]))
        for w in np.flatnonzero(winners == r):
            x0, x1 = x_of(times[w, 0]), max(x_of(times[w, 0]) + 1, x_of(times[w, 1]))
            draw.rectangle([x0, y0, x1 - 1, y0 + row_height - 1], outline=(230, 30, 30), width=2)
    axis_y = top + rows_h + 2
    draw.line([plot_x0, axis_y, plot_x1, axis_y], fill=TEXT)
    step = _time_step(duration, plot_w)
    t = 0.0
    while t <= duration + 1e-9:
        x = x_of(t)
        draw.line([x, axis_y, x, axis_y + 4], fill=TEXT)
        draw.text((x, axis_y + 5), format_seconds(round(t, 6)), fill=TEXT, font=fnt, anchor='mt')
        t += step
    bar = colorbar(min(360, plot_w), legend_h - 4, cmap, low='probability 0', high='1 (red outline: top-1)',
                   font_size=font_size - 1)
    img.paste(bar, (plot_x1 - bar.width, top + rows_h + axis_h))
    return img
