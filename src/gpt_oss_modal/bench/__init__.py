"""`gpt-oss-modal bench`: load-test any OpenAI-compatible endpoint with `vllm bench serve`'s metrics.

A concurrency sweep with token-exact prompts and replies, shaped like vLLM's own benchmark
(vllm/benchmarks/serve.py and lib/endpoint_request_func.py), one concern per module:

* `options`  - BenchOptions, every flag of the command declared once, and BenchError.
* `metrics`  - what one request measured, and the level's numbers as vLLM's calculate_metrics defines them.
* `workload` - the tokenizer, and random prompts that encode to exactly the requested number of tokens.
* `endpoint` - the HTTP client (aiohttp): the request body, SSE parsing, one timed streamed request.
* `sweep`    - the levels one after the other, at most `concurrency` requests in flight, the result document.
* `report`   - the results table (rich on a terminal, markdown in a pipe), JSON and the PNG plot.
* `cli`      - the command itself: options -> config -> server -> sweep -> report.

Nothing here is imported by `gpt-oss-modal --help`: the command's module imports the rest when it runs.
"""
