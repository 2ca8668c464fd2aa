"""The video with the model's predictions drawn on it: ``tools.predict --timeline --annotate OUT.mp4``.

Each frame of the source video gets, in its top-left corner, the top-k classes and probabilities of the
current window (the scored window whose centre is nearest the frame's time) with a bar per class, so a user
can watch what the model says while the action happens. Frames are read and written with PyAV; the output is
H.264 (``yuv420p``, so an odd width or height loses its last pixel column / row) at the source's frame rate,
written to a temporary file and put in place only when complete.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from tools import _render

# a probability bar's colour: the top-1 class in the timeline's red, the others grey
_TOP1 = (220, 30, 30)
_OTHER = (200, 200, 200)


def current_windows(frame_times: np.ndarray, window_times: np.ndarray) -> np.ndarray:
    """Per frame time (seconds), the index of the window whose centre is nearest (ties: the earlier one)."""
    centres = np.asarray(window_times, dtype=np.float64).mean(axis=1)
    distance = np.abs(np.asarray(frame_times, dtype=np.float64)[:, None] - centres[None, :])
    return distance.argmin(axis=1)


def overlay_lines(probs: np.ndarray, names: Sequence[str], topk: int) -> list:
    """``[(name, probability), ...]``: the window's top-k classes, most probable first."""
    order = np.argsort(-probs, kind='stable')[:topk]
    return [(names[c], float(probs[c])) for c in order]


def draw_overlay(image: Image.Image, lines: Sequence[tuple], start: float, end: float) -> Image.Image:
    """Draw the window's span and its classes (probability, bar, name) on a dark box in the top-left corner."""
    fnt = _render.font(max(10, min(18, image.height // 18)))
    line_h = _render.text_size('Ag', fnt)[1] + 4
    texts = [f"{start:.1f}-{end:.1f} s"] + [f"{p:6.1%}  {name}" for name, p in lines]
    bar_w = max(20, image.width // 10)
    width = min(image.width, max(_render.text_size(t, fnt)[0] for t in texts) + bar_w + 16)
    height = min(image.height, line_h * len(texts) + 6)
    box = Image.new('RGBA', image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(box)
    draw.rectangle((0, 0, width, height), fill=(0, 0, 0, 160))   # see-through: the video stays visible
    draw.text((4, 3), texts[0], fill=(255, 255, 255, 255), font=fnt)
    for i, (text, (_, p)) in enumerate(zip(texts[1:], lines), start=1):
        y = 3 + i * line_h
        draw.rectangle((4, y + 2, 4 + int(round(bar_w * p)), y + line_h - 4), fill=(_TOP1 if i == 1 else _OTHER) + (255,))
        draw.text((8 + bar_w, y), text, fill=(255, 255, 255, 255), font=fnt)
    return Image.alpha_composite(image.convert('RGBA'), box).convert('RGB')


def annotate_video(src: str, dst: str, window_times: np.ndarray, probs: np.ndarray, names: Sequence[str],
                   topk: int = 3) -> int:
    """Write ``dst``: every frame of ``src`` with its current window's top-k drawn on it. Returns the frames
    written. ``window_times`` (W, 2) seconds and ``probs`` (W, classes) are ``tools.predict.timeline``'s."""
    import av

    from utils.fs import temp_path

    os.makedirs(os.path.dirname(os.path.abspath(dst)) or '.', exist_ok=True)
    tmp = temp_path(dst)
    written = 0
    try:
        with av.open(src) as source, av.open(tmp, 'w', format='mp4') as out:
            stream = source.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or 25
            encoder = out.add_stream('libx264', rate=rate)
            encoder.width, encoder.height = stream.width // 2 * 2, stream.height // 2 * 2
            encoder.pix_fmt = 'yuv420p'
            for frame in source.decode(stream):
                t = frame.time if frame.time is not None else written / float(rate)
                w = int(current_windows(np.array([t]), window_times)[0])
                image = frame.to_image().crop((0, 0, encoder.width, encoder.height))
                image = draw_overlay(image, overlay_lines(probs[w], names, topk), *window_times[w])
                for packet in encoder.encode(av.VideoFrame.from_image(image)):
                    out.mux(packet)
                written += 1
            for packet in encoder.encode():
                out.mux(packet)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return written
