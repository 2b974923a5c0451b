"""A `sitecustomize` for every Python process of the engine: fixes to the vLLM it runs (see `sitecustomize.py`).

Importing this package runs none of them: `SITE_DIR` is the directory to put first on an engine's PYTHONPATH.
"""

from pathlib import Path

SITE_DIR = str(Path(__file__).resolve().parent)
