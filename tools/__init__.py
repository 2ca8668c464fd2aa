"""Command-line tools for trained models: predict, visualize, report, publish, flops.

Run them as modules from the repository root (``python -m tools.predict ...``): Python then puts the
repository root first on ``sys.path``, so ``import datasets`` finds this project's package, not Hugging
Face's. From elsewhere, put the root on ``PYTHONPATH``.
"""
