"""The training and evaluation machinery behind ``main.py``.

``trainer.py`` (the epoch loop), ``evaluator.py`` (multi-view evaluation), ``resume.py`` (where a run starts
from and how its state comes back), ``checkpoint/`` (the checkpoint format), ``config.py`` / ``defaults.py``
(the settings), and one small module per ingredient: ``optim.py``, ``lr_schedule.py``, ``ema.py``, ``amp.py``,
``losses.py``, ``weight_init.py``, ``preemption.py``, ``meters.py``, ``throughput.py``, ``finished.py`` (a
finished run given again).

Nothing is imported here, so that ``models`` and ``datasets`` can import ``engine.checkpoint`` or
``engine.config`` lazily without importing the whole engine (which imports them).
"""
