"""The core: settings, the GPU and model catalog, the planner, and the one vLLM command builder. Pure: no I/O beyond reading config."""
