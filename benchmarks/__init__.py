"""Speed and memory measurements, each printing ratios measured side by side in one run.

Run them as modules from the repository root: ``python -m benchmarks.model``, ``python -m benchmarks.loader``.
``reference_video_focalnet.py`` is the plain re-implementation of the original model that the benchmark
compares against and the tests check ``models/`` with.
"""
