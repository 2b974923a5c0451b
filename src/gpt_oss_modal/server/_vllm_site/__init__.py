"""A `sitecustomize` for every Python process of the engine: fixes to the vLLM it runs (see `sitecustomize.py`)."""
