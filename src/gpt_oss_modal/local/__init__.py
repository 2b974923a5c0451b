"""The local server: vLLM on this machine, the embedded tiny checkpoint and its tokenizer, vLLM's CPU-build entry."""
