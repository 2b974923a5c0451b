"""A `sitecustomize` for every Python process of the local vLLM CPU engine (see `sitecustomize.py`)."""
