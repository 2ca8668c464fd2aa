"""Command-line tools for trained models: predict, visualize, report, publish.

Run them as scripts from the repository root (``python tools/predict.py ...``); each puts the repository
root first on ``sys.path`` so that ``import datasets`` finds this project's package, not Hugging Face's.
"""
