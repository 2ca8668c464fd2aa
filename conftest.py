"""Make the repository root the first import location.

The project's package ``datasets`` shares its name with Hugging Face's; putting the repository root
first on ``sys.path`` makes ``import datasets`` resolve to ours in tests, wherever pytest is started.
"""
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
if sys.path[0] != ROOT:
    sys.path.insert(0, ROOT)
