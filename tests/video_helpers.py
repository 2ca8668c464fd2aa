"""Tiny encoded videos for the data tests: textured frames, every kind of unreadable file, a config over them.

The ``video_dir`` fixture (``tests/conftest.py``) builds a folder of them once per test module.
"""
import os

import numpy as np

from datasets.decoders import write_video
from engine_helpers import TOY_CFG

NUM_GOOD = 7


def stamped_frames(num_frames=45, height=24, width=32, seed=0):
    """Textured frames that differ from each other (a moving block and a per-frame stamp)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 200 // width + 20, yy * 200 // height + 20, np.full_like(xx, 90)], axis=-1)
    base = (base + rng.integers(0, 8, (height, width, 1))).astype(np.uint8)   # smooth, codec-friendly
    frames = np.repeat(base[None], num_frames, axis=0)
    for i in range(num_frames):
        frames[i, :4, :4] = (i * 5) % 256
        x = (i * 2) % (width - 6)
        frames[i, 10:16, x:x + 6] = 255
    return frames


def _truncated_after_header(src, dst):
    """Cut a faststart mp4 (index first) right after the 20th frame's data: the header still lists 45."""
    import av
    with av.open(src) as container:
        stream = container.streams.video[0]
        packets = [(p.pos, p.size) for p in container.demux(stream) if p.size]
    end = packets[19][0] + packets[19][1]
    with open(src, 'rb') as f:
        data = f.read()
    with open(dst, 'wb') as f:
        f.write(data[:end])
    return dst


def make_unreadable(root, src_mp4, src_fast):
    import av
    cases = {}
    cases['missing'] = str(root / 'missing.mp4')
    cases['empty'] = str(root / 'empty.mp4')
    open(cases['empty'], 'wb').close()
    with open(src_mp4, 'rb') as f:
        data = f.read()
    cases['truncated'] = str(root / 'truncated.mp4')        # index at the end: cutting loses it
    with open(cases['truncated'], 'wb') as f:
        f.write(data[:len(data) // 2])
    cases['garbage'] = str(root / 'garbage.mp4')
    with open(cases['garbage'], 'wb') as f:
        f.write(b'not a video at all ' * 50)
    cases['zero_frames'] = str(root / 'audio_only.mp4')      # a valid container without video frames
    with av.open(cases['zero_frames'], 'w') as container:
        stream = container.add_stream('aac', rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format='fltp', layout='mono')
        frame.sample_rate = 8000
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            container.mux(packet)
    cases['header_claims_more'] = _truncated_after_header(src_fast, str(root / 'cut_after_header.mp4'))
    cases['directory'] = str(root)
    return cases


def write_video_dir(root):
    """Seven tiny H.264/VP9 videos of 20-45 frames (3 classes) in ``root``, plus every kind of unreadable file.

    Returns ``(root, [(name, label)] of the readable ones, {case: name} of the unreadable ones)``."""
    good = []
    for i in range(NUM_GOOD):
        ext, codec = ('webm', 'libvpx-vp9') if i == 3 else ('mp4', 'libx264')
        path = write_video(str(root / f'v{i}.{ext}'), stamped_frames(20 + 4 * i, seed=i), codec=codec)
        good.append((os.path.basename(path), i % 3))
    fast = write_video(str(root / 'fast.mp4'), stamped_frames(), faststart=True)
    bad = make_unreadable(root, str(root / 'v0.mp4'), fast)
    bad.pop('directory')
    return root, good, {name: os.path.basename(path) for name, path in bad.items()}


def make_config(root, rows, tmp_path, **opts):
    ann = tmp_path / 'ann.csv'
    ann.write_text(''.join(f'{path},{label}\n' for path, label in rows))
    options = {'DATA.ROOT': str(root), 'DATA.TRAIN_FILE': str(ann), 'DATA.VAL_FILE': str(ann),
               'DATA.NUM_CLASSES': 3, 'MODEL.NUM_CLASSES': 3, 'DATA.NUM_FRAMES': 4, 'DATA.INPUT_SIZE': 16,
               'DATA.BATCH_SIZE': 2, 'DATA.NUM_WORKERS': 0, 'TEST.BATCH_SIZE': 2, 'SEED': 3,
               'AUG.FLIP_RATIO': 0.5, 'AUG.COLOR_JITTER': 0.8, 'AUG.GRAY_SCALE': 0.2,
               # pinned, so that tuning the toy recipe's validation views does not change what these tests read
               'TEST.NUM_CLIP': 1, 'TEST.NUM_CROP': 1}
    options.update(opts)
    flat = [str(v) for kv in options.items() for v in kv]
    from engine.config import load_config
    return load_config(TOY_CFG, flat, output=str(tmp_path / 'out'))
