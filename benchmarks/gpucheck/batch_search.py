"""The largest training batch per GPU that fits: double from a start until a step runs out of memory, then
bisect between the last batch that fitted and the first that did not, to within ``precision`` of it.

A trial is two training steps of ``models/`` (the second one with the optimizer state allocated, as in a
real run). An out-of-memory error is caught, everything the trial held is dropped and the allocator's cache
emptied before the next trial. On the CPU (``--quick``) nothing runs out of memory at these sizes, so the
search stops at ``search_cap``; the row says so.
"""
from __future__ import annotations

import time
from typing import Callable, List, Optional, Tuple

import torch

from models import VideoFocalNet
from .model_speed import model_kwargs, setup_device
from .plan import Settings
from .runner import Channel
from .timing import free_memory, timed_call

GIB = 2 ** 30
_OOM_WORDS = ('out of memory', 'ALLOC_FAILED', 'NOT_ENOUGH_WORKSPACE', "can't allocate memory")


def largest_fitting(fits: Callable[[int], bool], start: int, cap: int, precision: float,
                    out_of_time: Callable[[], bool] = lambda: False) -> Tuple[int, Optional[int], str]:
    """``(largest batch that fitted or 0, smallest that did not or None, why the search stopped)``.

    The stop reason is ``'bracketed'`` (the answer is within ``precision`` of the largest fitting batch),
    ``'cap'`` (``cap`` fitted) or ``'time'`` (``out_of_time()`` said so before the next trial).
    """
    if start < 1 or cap < start:
        raise ValueError(f'batch search: need 1 <= start <= cap, got start {start}, cap {cap}')
    lo, hi = 0, None
    batch = start
    while hi is None:
        if out_of_time():
            return lo, hi, 'time'
        if fits(batch):
            lo = batch
            if batch >= cap:
                return lo, hi, 'cap'
            batch = min(2 * batch, cap)
        else:
            hi = batch
    while hi - lo > max(1, int(lo * precision)):
        if out_of_time():
            return lo, hi, 'time'
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi, 'bracketed'


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(w in str(exc) for w in _OOM_WORDS)


def run(st: Settings, out: Channel, deadline: float, name: str) -> None:
    """The ``batch:<size>`` section."""
    device = setup_device(st, out)
    size = st.size(name)
    dtype = torch.bfloat16 if st.search_dtype == 'bf16' else torch.float16
    key = f'maxbatch.{size.name}.{st.search_dtype}'
    torch.manual_seed(0)
    model = VideoFocalNet(**model_kwargs(st, size)).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)
    tried: List[str] = []
    best = {'batch': 0, 'peak': 0., 'rate': 0.}
    last_trial = [0.]

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()

    def fits(batch: int) -> bool:
        start = time.monotonic()
        ok, seconds = True, 0.
        try:
            x = torch.randn(batch, st.frames, 3, st.img_size, st.img_size, device=device)
            y = torch.randint(0, st.num_classes, (batch,), device=device)
            if device.type == 'cuda':
                torch.cuda.reset_peak_memory_stats(device)
            step(x, y)
            seconds = timed_call(lambda: step(x, y), device)
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            ok = False
        x = y = None
        opt.zero_grad(set_to_none=True)
        if ok:
            peak = torch.cuda.max_memory_allocated(device) / GIB if device.type == 'cuda' else 0.
            best.update(batch=batch, peak=peak, rate=batch / seconds)
        free_memory(device)
        tried.append(f"{batch} {'fits' if ok else 'OOM'}")
        last_trial[0] = time.monotonic() - start
        return ok

    def out_of_time() -> bool:
        return deadline - time.monotonic() < 3 * last_trial[0] + 2

    lo, hi, why = largest_fitting(fits, st.search_start, st.search_cap, st.search_precision, out_of_time)
    if lo == 0:
        out.failed(key, f'not even batch {st.search_start} fitted' if why != 'time' else
                   'the time ran out before the first trial ended', note=', '.join(tried))
        return
    total = torch.cuda.get_device_properties(device).total_memory / GIB if device.type == 'cuda' else None
    memory = (f'peak {best["peak"]:.1f} of {total:.1f} GiB' if total else 'CPU: no memory limit measured')
    verdict = {'bracketed': f'{hi} did not fit', 'cap': f'stopped at the search cap {st.search_cap}',
               'time': 'stopped by the time cap: the largest batch lies between '
                       f'{lo} and {hi if hi else "beyond"}'}[why]
    out.ok(key, lo, note=f'{verdict}; {memory}; {best["rate"]:.1f} clips/s at batch {best["batch"]}; '
           f'tried: {", ".join(tried)}')
