"""The engine's life cycle, the same in a Modal container and on this machine: start, ready, prime, warm up, sleep, wake, stop; and the auth middleware vLLM loads."""
