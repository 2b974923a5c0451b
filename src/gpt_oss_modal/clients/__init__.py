"""Clients of a running endpoint: the openai-client helpers (health wait, smoke test, chat) and the benchmark."""
