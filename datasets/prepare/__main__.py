"""``python -m datasets.prepare``: see ``datasets/prepare/__init__.py``."""
import sys

from .cli import main

sys.exit(main())
