"""How the product talks to a running endpoint: the openai client with Modal's proxy headers or a bearer key,
the /health wait, the smoke test and streamed chat. Used by the life cycle, the local server, `run` and `chat`."""
