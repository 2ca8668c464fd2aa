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
