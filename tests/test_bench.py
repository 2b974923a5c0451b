"""`gpt-oss-modal bench` without a model: the metric math on hand-made records, the token-exact workload,
the SSE client against a scripted fake server, the JSON document, the PNG and the CLI's exit codes.

No test here times anything: the fake server answers instantly, and only counts and formulas are checked.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from gpt_oss_modal.bench import endpoint, metrics, options, report, sweep, workload
from gpt_oss_modal.core import catalog

# --- a small byte-level BPE tokenizer, trained in memory ------------------------------------------------


def _train_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 7))) for _ in range(400)]
    corpus = [" ".join(rng.choice(words) for _ in range(50)) for _ in range(400)]
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1500,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    return tok


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tok")
    _train_tokenizer().save(str(d / "tokenizer.json"))
    return d


@pytest.fixture(scope="module")
def tok(tokenizer_file: Path) -> workload.Tokenizer:
    return workload.load_tokenizer(tokenizer_file)


# --- metric math ----------------------------------------------------------------------------------------


def rec(
    ttft: float, itl: list[float], out: int, prompt: int = 10, ok: bool = True, **kw
) -> metrics.RequestRecord:
    return metrics.RequestRecord(
        success=ok, prompt_len=prompt, output_tokens=out, ttft=ttft, latency=ttft + sum(itl), itl=itl, **kw
    )


def test_percentile_interpolates_linearly_between_ranks() -> None:
    xs = [4.0, 1.0, 3.0, 2.0]  # sorted 1 2 3 4
    assert metrics.percentile(xs, 0) == 1.0
    assert metrics.percentile(xs, 100) == 4.0
    assert metrics.percentile(xs, 50) == 2.5
    assert metrics.percentile(xs, 90) == pytest.approx(3.7)  # rank 2.7 -> 3 + 0.7
    assert metrics.percentile([7.0], 99) == 7.0
    assert metrics.percentile([], 50) is None
    with pytest.raises(ValueError):
        metrics.percentile(xs, 101)


def test_percentile_matches_numpy_default() -> None:
    np = pytest.importorskip("numpy")
    rng = random.Random(1)
    for n in (1, 2, 3, 10, 101):
        xs = [rng.expovariate(1.0) for _ in range(n)]
        for p in (1, 25, 50, 90, 99, 99.9):
            assert metrics.percentile(xs, p) == pytest.approx(
                float(np.percentile(xs, p)), rel=1e-12, abs=1e-15
            )


def test_tpot_is_decode_time_over_tokens_after_the_first() -> None:
    r = metrics.RequestRecord(success=True, output_tokens=11, ttft=0.1, latency=1.1)
    assert metrics.tpot(r) == pytest.approx(0.1)
    assert metrics.tpot(metrics.RequestRecord(success=True, output_tokens=1, ttft=0.1, latency=0.1)) is None
    assert metrics.tpot(metrics.RequestRecord(success=False, output_tokens=11, ttft=0.1, latency=1.1)) is None


def test_summarize_hand_made_level() -> None:
    records = [
        rec(0.1, [0.02] * 9, out=10, prompt=100, expected_output_len=10, expected_prompt_len=100),
        rec(0.3, [0.04] * 4, out=5, prompt=50, expected_output_len=6, expected_prompt_len=50),
        metrics.RequestRecord(success=False, error="Traceback...\nReadTimeout: timed out"),
    ]
    s = metrics.summarize(records, duration_s=2.0, percentiles=[50, 99])
    assert (s["num_requests"], s["completed"], s["errors"]) == (3, 2, 1)
    assert s["total_input_tokens"] == 150 and s["total_output_tokens"] == 15
    assert s["output_throughput"] == pytest.approx(7.5)  # 15 tokens / 2 s
    assert s["total_token_throughput"] == pytest.approx(82.5)
    assert s["request_throughput"] == pytest.approx(1.0)  # successful requests only
    # TPOT per request: (0.28 - 0.1)/9 = 0.02 and (0.46 - 0.3)/4 = 0.04
    assert s["mean_tpot_ms"] == pytest.approx(30.0)
    assert s["median_tpot_ms"] == pytest.approx(30.0)
    assert s["p99_tpot_ms"] == pytest.approx(20 + 20 * 0.99)
    assert s["std_tpot_ms"] == pytest.approx(10.0)  # population std, as numpy
    # ITL pools every gap: nine of 20 ms, four of 40 ms
    assert s["median_itl_ms"] == pytest.approx(20.0)
    assert s["mean_itl_ms"] == pytest.approx((9 * 20 + 4 * 40) / 13)
    assert s["median_ttft_ms"] == pytest.approx(200.0)
    assert s["p50_e2el_ms"] == pytest.approx((280 + 460) / 2)
    assert s["output_len_mismatches"] == 1 and s["prompt_len_mismatches"] == 0
    assert s["error_samples"] == ["ReadTimeout: timed out"]


def test_summarize_all_failed_reports_nulls_not_zeros() -> None:
    s = metrics.summarize([metrics.RequestRecord(success=False, error="x")], duration_s=1.0)
    assert s["completed"] == 0 and s["errors"] == 1
    assert s["output_throughput"] == 0.0
    assert s["median_ttft_ms"] is None and s["p99_tpot_ms"] is None


def test_cost_per_million_output_tokens() -> None:
    h100 = catalog.GPUS["H100"]
    one = metrics.cost_per_million_output_tokens(h100.usd_per_hour, 1, 1000.0)
    assert one == pytest.approx(h100.usd_per_hour / 3.6)  # 3.6e6 tokens per hour at 1000 tok/s
    assert metrics.cost_per_million_output_tokens(h100.usd_per_hour, 2, 1000.0) == pytest.approx(2 * one)
    assert metrics.cost_per_million_output_tokens(1.0, 1, 0.0) is None
    lv = sweep.level_result(
        sweep.LevelRun(4, [rec(0.1, [0.01] * 99, out=100)], duration_s=0.1),
        [50],
        metrics.GpuPrice("H100", 1, h100.usd_per_hour),
    )
    assert lv["output_throughput"] == pytest.approx(1000.0)
    assert lv["usd_per_m_output_tokens"] == pytest.approx(one)


def test_length_bounds_follow_vllm_random_dataset() -> None:
    assert workload.length_bounds(100, 0.0, 1) == (100, 100)
    assert workload.length_bounds(100, 0.25, 1) == (75, 125)
    assert workload.length_bounds(3, 0.5, 1) == (1, 5)  # floor(1.5), ceil(4.5)
    assert workload.length_bounds(1, 0.9, 1) == (1, 2)  # never 0 tokens
    with pytest.raises(options.BenchError):
        workload.length_bounds(100, 1.0, 1)


def test_parse_levels_and_percentiles() -> None:
    assert options.parse_concurrency("1, 4,16") == [1, 4, 16]
    for bad in ("", "0", "a,b", "-1"):
        with pytest.raises(options.BenchError):
            options.parse_concurrency(bad)
    assert options.parse_percentiles("50,99.9") == [50.0, 99.9]
    assert metrics.percentile_key(99.9) == "p99.9" and metrics.percentile_key(50.0) == "p50"
    with pytest.raises(options.BenchError):
        options.parse_percentiles("0")


def test_the_url_is_the_servers_root() -> None:
    assert options.BenchOptions(url="https://x.modal.run/v1/").base_url == "https://x.modal.run"
    assert (
        options.BenchOptions(url="http://127.0.0.1:8000/v1/completions").base_url == "http://127.0.0.1:8000"
    )
    with pytest.raises(options.BenchError, match="^--url 'x.modal.run' is not an http"):
        options.BenchOptions(url="x.modal.run")


def test_infer_model_from_the_servers_root(tmp_path: Path) -> None:
    assert workload.infer_model("openai/gpt-oss-120b") == "openai/gpt-oss-120b"
    assert workload.infer_model("meta-llama/Llama-3-8B") is None and workload.infer_model(None) is None
    m20 = catalog.MODELS["openai/gpt-oss-20b"]
    for name, cfg, want in (
        ("real", {"model_type": "gpt_oss", "num_hidden_layers": m20.num_layers,
                  "num_local_experts": m20.num_experts, "hidden_size": 2880}, m20.id),
        ("tiny", {"model_type": "gpt_oss", "num_hidden_layers": 4, "num_local_experts": 4, "hidden_size": 64},
         catalog.TINY),
        ("llama", {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 64}, None),
    ):  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
        assert workload.infer_model(str(tmp_path / name)) == want, name
    assert workload.infer_model(str(tmp_path)) is None  # a directory without config.json


# --- workload -------------------------------------------------------------------------------------------


def test_workload_is_token_exact_deterministic_and_distinct(tok: workload.Tokenizer) -> None:
    w = workload.make_workload(tok, 30, input_len=200, output_len=20, range_ratio=0.5, seed=7)
    assert len(w) == 30
    for p in w:
        assert len(tok.encode(p.text)) == p.prompt_len
        assert 100 <= p.prompt_len <= 300 and 10 <= p.output_len <= 30
    assert len({p.text for p in w}) == 30
    assert w == workload.make_workload(tok, 30, input_len=200, output_len=20, range_ratio=0.5, seed=7)
    assert w != workload.make_workload(tok, 30, input_len=200, output_len=20, range_ratio=0.5, seed=8)
    fixed = workload.make_workload(tok, 5, input_len=64, output_len=8)
    assert {(p.prompt_len, p.output_len) for p in fixed} == {(64, 8)}


def test_payload_asks_for_exact_length_streams_and_usage() -> None:
    p = workload.Prompt("hello world", 2, 17)
    opts = options.BenchOptions(url="http://h/v1", api_key="k", modal_key="wk-1", modal_secret="ws-2")
    body = endpoint.request_body(opts, "llm", p)
    assert body["max_tokens"] == 17 and body["ignore_eos"] is True and "min_tokens" not in body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == "llm" and opts.endpoint_url == "http://h/v1/completions"
    h = (
        opts.headers
    )  # built by gpt_oss_modal.clients.openai_api.auth_headers, as every other client of the server
    assert h["Authorization"] == "Bearer k" and h["Modal-Key"] == "wk-1" and h["Modal-Secret"] == "ws-2"
    chat_opts = options.BenchOptions(url="http://h", endpoint="chat", ignore_eos=False)
    chat = endpoint.request_body(chat_opts, "llm", p)
    assert chat["messages"][0]["content"] == "hello world" and chat["max_completion_tokens"] == 17
    assert "ignore_eos" not in chat and "min_tokens" not in chat
    assert chat_opts.endpoint_url == "http://h/v1/chat/completions" and chat_opts.headers == {}


def test_sse_parser_handles_split_chunks_comments_and_crlf() -> None:
    parser = endpoint.SSEParser()
    assert parser.feed(b'data: {"a": 1}\n\nda') == ['{"a": 1}']
    assert parser.feed(b"ta: [DO") == []
    assert parser.feed(b"NE]\r\n\r\n: ping\n\ndata: \xc3") == ["[DONE]"]
    assert parser.feed(b'\xa9"\n\n') == ['\u00e9"']


# --- a scripted OpenAI-style server ---------------------------------------------------------------------


class FakeServer:
    """Streams `max_tokens` one-word chunks per completion; counts prompt tokens as words (our prompts are
    made of one-word tokens). Every `fail_every`-th request gets HTTP 500; `short_by` trims every reply.

    With `redirects=k`, the first POST and the first GET of /v1/models are answered as Modal answers a web
    request it held for 150 s: `303 See Other` to a result URL (`?__modal_function_call_id=...`), whose GET
    redirects to itself k-1 more times and then gives the reply. `requests` logs (method, path, headers)."""

    def __init__(self, fail_every: int = 0, short_by: int = 0, with_usage: bool = True, redirects: int = 0):
        self.fail_every = fail_every
        self.short_by = short_by
        self.with_usage = with_usage
        self.redirects = redirects
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.requests: list[tuple[str, str, dict]] = []
        self.held_kinds: set[str] = set()
        self.pending: dict[str, list] = {}  # call id -> [the POST's body, or None for /v1/models; hops left]
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a) -> None:
                pass

            def redirect(self, to: str) -> None:
                self.send_response(303)
                self.send_header("Location", to)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def held(self, body: dict | None) -> bool:
                """Answer with Modal's 303 if this is the first request of its kind (body None: the model
                list) and redirects are on."""
                kind = "models" if body is None else "completion"
                if not server.redirects or kind in server.held_kinds:
                    return False
                server.held_kinds.add(kind)
                call = f"fc-{len(server.pending) + 1}"
                server.pending[call] = [body, server.redirects - 1]
                self.redirect(f"{self.path.split('?')[0]}?__modal_function_call_id={call}")
                return True

            def do_GET(self) -> None:
                server.requests.append(("GET", self.path, dict(self.headers)))
                call = parse_qs(urlsplit(self.path).query).get("__modal_function_call_id", [None])[0]
                if call is not None:
                    body, hops = server.pending[call]
                    if hops > 0:
                        server.pending[call][1] -= 1
                        return self.redirect(self.path)
                    if body is not None:
                        return self.complete(body)
                elif self.held(None):
                    return
                data = json.dumps(
                    {"object": "list", "data": [{"id": "llm", "root": "/nowhere/model"}]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                server.requests.append(("POST", self.path, dict(self.headers)))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.bodies.append(body)
                server.headers.append(dict(self.headers))
                if not self.held(body):
                    self.complete(body)

            def complete(self, body: dict) -> None:
                n = len(server.bodies)
                if server.fail_every and n % server.fail_every == 0:
                    msg = b'{"error": "boom"}'
                    self.send_response(500)
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                out = max(1, body["max_tokens"] - server.short_by)
                for i in range(out):
                    chunk = {"choices": [{"index": 0, "text": f" w{i}", "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                if server.with_usage:
                    usage = {"prompt_tokens": len(body["prompt"].split()), "completion_tokens": out}
                    self.wfile.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeServer:  # noqa: PYI034
        self.thread.start()
        return self

    def __exit__(self, *a) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as s:
        yield s


async def send_one(url: str, prompt: workload.Prompt, **kw) -> metrics.RequestRecord:
    async with endpoint.open_session(1, 60) as session:
        return await endpoint.send_request(session, options.BenchOptions(url=url), "llm", prompt, **kw)


def test_send_request_counts_tokens_and_gaps(server: FakeServer) -> None:
    r = asyncio.run(send_one(server.url, workload.Prompt(" a b c", 3, 12)))
    assert r.success and r.error == ""
    assert r.output_tokens == 12 and r.prompt_len == 3
    assert len(r.itl) == 11  # one gap between each pair of the 12 token events; the usage chunk is none
    assert r.latency == pytest.approx(r.ttft + sum(r.itl))
    assert server.bodies[0]["max_tokens"] == 12 and server.bodies[0]["model"] == "llm"


def test_without_usage_the_tokenizer_counts_the_reply() -> None:
    with FakeServer(with_usage=False) as s:
        r = asyncio.run(send_one(s.url, workload.Prompt("x", 1, 5), count_tokens=lambda _: 99))
    assert r.success and r.output_tokens == 99 and r.prompt_len == 1


@pytest.mark.parametrize("hops", [1, 3])
def test_modal_303_after_post_is_followed_by_get_of_the_result_url(hops: int) -> None:
    """Modal's answer to a request it held 150 s: the reply comes from GET of the Location, auth kept."""
    with FakeServer(redirects=hops) as s:
        opts = options.BenchOptions(url=s.url, modal_key="wk-1", modal_secret="ws-2")

        async def go() -> tuple:
            async with endpoint.open_session(1, 60) as session:
                models = await endpoint.list_models(session, opts)
                return models, await endpoint.send_request(session, opts, "llm", workload.Prompt("a b", 2, 4))

        (served, root), r = asyncio.run(go())
    assert (served, root) == ("llm", "/nowhere/model")
    assert r.success and r.output_tokens == 4 and r.prompt_len == 2, r.error
    methods = [(m, p.split("?")[0]) for m, p, _ in s.requests]
    assert (
        methods
        == [("GET", "/v1/models")] * (1 + hops)
        + [("POST", "/v1/completions")]
        + [("GET", "/v1/completions")] * hops
    )
    assert len(s.bodies) == 1  # the prompt was sent once: the result URL is polled, not posted to again
    assert all(h["Modal-Key"] == "wk-1" and h["Modal-Secret"] == "ws-2" for _, _, h in s.requests)


def test_sweep_counts_errors_and_writes_json_and_png(tok: workload.Tokenizer, tmp_path: Path) -> None:
    gpu = metrics.GpuPrice("L4", 1, catalog.GPUS["L4"].usd_per_hour)
    with FakeServer(fail_every=4, short_by=1) as s:
        opts = options.BenchOptions(url=s.url, concurrency="1,3", requests=6, input_len=32, output_len=6)
        result = sweep.sweep(opts, tok, gpu=gpu, model="tiny")
    assert result["served_model"] == "llm"  # found at /v1/models
    assert result["http_client"] == "aiohttp"
    assert len(s.bodies) == 1 + 6 + 6  # the untimed first request, then 6 per level
    assert [lv["concurrency"] for lv in result["levels"]] == [1, 3]
    total_errors = sum(lv["errors"] for lv in result["levels"])
    assert total_errors == 3  # requests 4, 8 and 12 failed
    for lv in result["levels"]:
        assert lv["completed"] + lv["errors"] == 6
        assert lv["output_len_mismatches"] == lv["completed"]  # the server stopped one token short
        assert lv["prompt_len_mismatches"] == 0  # the server counted exactly the tokens we built
        assert lv["total_output_tokens"] == 5 * lv["completed"]
        assert any("HTTP 500" in e for e in lv["error_samples"])
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    report.write_json(result, out)
    check_result_schema(json.loads(out.read_text()), levels=[1, 3], percentiles=[50, 90, 99])
    pytest.importorskip("matplotlib")
    report.plot(result, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_duration_mode_sends_while_the_clock_is_before_the_deadline(
    tok: workload.Tokenizer, server: FakeServer
) -> None:
    """A clock that moves 0.1 s per finished request, not with the machine: two workers start at 0.0, then
    each finished request starts the next one while the clock reads 0.1, 0.2, 0.3 (< 0.35); the requests
    that finish at 0.4 and 0.5 start none. So 5 requests, and the level lasted 0.5 s on that clock."""
    prompts = workload.make_workload(tok, 4, 16, 3)
    done: list[metrics.RequestRecord] = []
    run = asyncio.run(
        sweep.run_level(
            options.BenchOptions(url=server.url), "llm", prompts, 2, duration_s=0.35,
            on_done=done.append, clock=lambda: 0.1 * len(done),
        )
    )  # fmt: skip
    assert len(run.records) == 5 and all(r.success for r in run.records)
    assert run.duration_s == pytest.approx(0.5)
    assert len(server.bodies) == 5


def test_first_request_failure_is_one_line(tok: workload.Tokenizer) -> None:
    with (
        FakeServer(fail_every=1) as s,
        pytest.raises(options.BenchError, match="first request .* failed: HTTP 500"),
    ):
        opts = options.BenchOptions(url=s.url, concurrency="1", requests=1, input_len=8, output_len=2)
        sweep.sweep(opts, tok, served_model="llm")


# --- the JSON document ----------------------------------------------------------------------------------

TOP_KEYS = {
    "schema", "created", "base_url", "endpoint", "served_model", "model", "tokenizer", "http_client",
    "workload",
    "percentiles", "gpu", "levels",
}  # fmt: skip
WORKLOAD_KEYS = {
    "dataset", "input_len", "output_len", "random_range_ratio", "requests_per_level", "duration_s_per_level",
    "warmup_requests", "ignore_eos", "seed", "request_rate",
}  # fmt: skip
LEVEL_KEYS = {
    "concurrency", "num_requests", "completed", "errors", "duration_s", "total_input_tokens",
    "total_output_tokens", "request_throughput", "output_throughput", "total_token_throughput",
    "output_len_mismatches", "prompt_len_mismatches", "error_samples", "usd_per_m_output_tokens",
}  # fmt: skip


def check_result_schema(doc: dict, levels: list[int], percentiles: list[float]) -> None:
    assert doc["schema"] == sweep.SCHEMA
    assert TOP_KEYS <= set(doc), TOP_KEYS - set(doc)
    assert WORKLOAD_KEYS <= set(doc["workload"])
    if doc["gpu"] is not None:
        assert set(doc["gpu"]) == {"name", "count", "usd_per_hour", "price_date"}
        assert doc["gpu"]["price_date"] == catalog.PRICE_DATE
    assert [lv["concurrency"] for lv in doc["levels"]] == levels
    stat_keys = {
        f"{stat}_{m}_ms"
        for m in metrics.METRICS
        for stat in ["mean", "median", "std", *(metrics.percentile_key(p) for p in percentiles)]
    }
    for lv in doc["levels"]:
        assert LEVEL_KEYS | stat_keys <= set(lv), (LEVEL_KEYS | stat_keys) - set(lv)
        for k in stat_keys | {"output_throughput", "request_throughput", "total_token_throughput"}:
            assert lv[k] is None or (isinstance(lv[k], float) and math.isfinite(lv[k]) and lv[k] >= 0), k
        assert isinstance(lv["errors"], int) and isinstance(lv["error_samples"], list)


# --- the command ----------------------------------------------------------------------------------------

EXE = shutil.which("gpt-oss-modal")


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [EXE, *args] if EXE else [sys.executable, "-m", "gpt_oss_modal.cli", *args]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GPT_OSS_", "MODAL_"))}
    return subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**base, "COLUMNS": "200", **(env or {})},
        timeout=120,
    )


def test_cli_bench_against_fake_server(tokenizer_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    with FakeServer() as s:
        r = cli(
            "bench", "--url", s.url + "/v1", "--tokenizer", str(tokenizer_file), "-c", "1,2", "-n", "4",
            "--input-len", "40", "--output-len", "5", "--gpu", "A10G", "--out", "r.json", "--plot", "r.png",
            "--json", "--modal-key", "wk-x", cwd=tmp_path, env={"MODAL_SECRET": "ws-y"},
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc == json.loads((tmp_path / "r.json").read_text())
    check_result_schema(doc, levels=[1, 2], percentiles=[50, 90, 99])
    assert doc["gpu"]["name"] == "A10G" and doc["served_model"] == "llm"
    assert all(lv["errors"] == 0 and lv["completed"] == 4 for lv in doc["levels"])
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert s.headers[-1]["Modal-Key"] == "wk-x" and s.headers[-1]["Modal-Secret"] == "ws-y"
    assert "concurrency 2" in r.stderr  # the progress bars


def test_cli_bench_piped_prints_the_whole_table(tokenizer_file: Path, tmp_path: Path) -> None:
    """stdout is a pipe here, as in a log or CI, and only 80 columns wide: the table is a markdown table at
    its natural width, every column named in full, nothing cut."""
    with FakeServer(redirects=2) as s:  # and every request of the run goes through Modal's 303s
        r = cli(
            "bench", "--url", s.url, "--tokenizer", str(tokenizer_file), "-c", "1,2", "-n", "3",
            "--input-len", "12", "--output-len", "4", "--gpu", "H100", cwd=tmp_path, env={"COLUMNS": "80"},
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout
    lines = r.stdout.splitlines()
    assert lines[0] == f"{s.url}/v1/completions  model llm  in 12 / out 4 tokens"
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if ln.startswith("|")]
    assert rows[0] == [
        "conc", "ok", "err", "req/s", "out tok/s", "total tok/s", "TTFT p50 ms", "TTFT p99 ms",
        "TPOT p50 ms", "TPOT p99 ms", "ITL p50 ms", "E2E p50 ms", "$/M out",
    ]  # fmt: skip
    assert rows[1] == ["---:"] * 13
    assert [row[:3] for row in rows[2:]] == [["1", "3", "0"], ["2", "3", "0"]]
    assert all(len(row) == 13 and "-" not in row for row in rows[2:])  # every number is there
    assert any(ln.startswith("$/M out: H100 x1") for ln in lines)
    assert sum(m == "GET" and "__modal_function_call_id" in p for m, p, _ in s.requests) == 2 + 2


def test_bench_flags_are_the_options_fields() -> None:
    """One declaration: each BenchOptions field is a flag of `bench`, with the field's default."""
    import dataclasses

    import typer.main

    from gpt_oss_modal.cli import app

    command = typer.main.get_command(app).commands["bench"]  # type: ignore[attr-defined]
    params = {p.name: p for p in command.params}
    fields = {f.name: f for f in dataclasses.fields(options.BenchOptions)}
    assert set(params) == set(fields)
    for name, f in fields.items():
        assert params[name].default == f.default, name


def test_cli_bench_prices_tiny_only_when_asked(tokenizer_file: Path, tmp_path: Path) -> None:
    common = ("bench", "--tokenizer", str(tokenizer_file), "-c", "1", "-n", "2", "--input-len", "8",
              "--output-len", "3", "--json")  # fmt: skip
    with FakeServer() as s:
        tiny = cli(*common, "--url", s.url, "--model", "tiny", cwd=tmp_path)
        priced = cli(*common, "--url", s.url, "--model", "tiny", "--gpu", "L4", cwd=tmp_path)
        default = cli(*common, "--url", s.url, cwd=tmp_path)  # the server's root says nothing: config's model
    for r in (tiny, priced, default):
        assert r.returncode == 0, r.stderr
    assert (
        json.loads(tiny.stdout)["gpu"] is None
        and json.loads(tiny.stdout)["levels"][0]["usd_per_m_output_tokens"] is None
    )
    assert json.loads(priced.stdout)["gpu"]["name"] == "L4"
    assert json.loads(priced.stdout)["levels"][0]["usd_per_m_output_tokens"] > 0
    d = json.loads(default.stdout)
    assert d["model"] == "openai/gpt-oss-20b" and d["gpu"]["name"] == "A10G"  # the default GPU


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "--url"),
        (["--url", "http://127.0.0.1:9", "-c", "0"], "--concurrency"),
        (["--url", "http://127.0.0.1:9", "-n", "3", "--duration", "5"], "not both"),
        (["--url", "ftp://x"], "http"),
        (["--url", "http://127.0.0.1:9", "--gpu", "T4"], "T4"),
        (["--url", "http://127.0.0.1:9"], "cannot reach"),
        (["--url", "http://127.0.0.1:9", "--modal-key", "wk-1"], "--modal-secret"),
        (["--url", "http://127.0.0.1:9", "--random-range-ratio", "1"], "--random-range-ratio"),
    ],
)
def test_cli_bench_bad_input_exits_2_with_one_line(args: list[str], needle: str, tmp_path: Path) -> None:
    r = cli("bench", *args, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
