"""`bench` reports vLLM's speculative-decoding acceptance when the server counts drafts, and nothing when not.

The parser reads a /metrics text recorded from a real vLLM (tests/data/vllm_metrics_ngram.txt). The sweep
runs against a real HTTP server on 127.0.0.1 that streams completions and serves that text at /metrics with
its counters advanced by each completion, so every level's figures are known in advance; the real engine
with a drafter is tests/e2e/test_bench_spec_engine.py.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gpt_oss_modal.bench import metrics, options, report, sweep, workload

RECORDED = (Path(__file__).parent / "data" / "vllm_metrics_ngram.txt").read_text()


def test_parses_vllms_recorded_counters() -> None:
    c = metrics.parse_spec_counters(RECORDED)
    assert c == metrics.SpecCounters(24, 72, 72, {0: 24, 1: 24, 2: 24})


def test_without_the_total_suffix_and_over_several_engines() -> None:
    """prometheus_client's text has `_total`; OpenMetrics-style names have none. Engines are summed, and
    `_created` (a timestamp) is never counted."""
    text = "\n".join(
        [
            'vllm:spec_decode_num_drafts{engine="0",model_name="llm"} 10',
            'vllm:spec_decode_num_drafts_total{engine="1",model_name="llm"} 5.0',
            'vllm:spec_decode_num_drafts_created{engine="1",model_name="llm"} 1.79e+09',
            'vllm:spec_decode_num_draft_tokens_total{engine="0"} 30',
            'vllm:spec_decode_num_accepted_tokens_total{engine="0"} 21',
            'vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",position="1"} 6',
            'vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="1",position="1"} 1',
            'vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",position="0"} 14',
        ]
    )
    assert metrics.parse_spec_counters(text) == metrics.SpecCounters(15, 30, 21, {0: 14, 1: 7})


@pytest.mark.parametrize(
    "text",
    [
        "",
        '# HELP vllm:num_requests_running x\nvllm:num_requests_running{engine="0"} 0.0\n',
        json.dumps({"object": "list", "data": [{"id": "llm"}]}),  # a server whose /metrics is something else
    ],
)
def test_no_counters_is_none(text: str) -> None:
    assert metrics.parse_spec_counters(text) is None


def test_summary_is_vllms_definitions() -> None:
    s = metrics.spec_decode_summary(metrics.SpecCounters(10, 30, 18, {0: 8, 1: 6, 2: 4}))
    assert s["acceptance_rate"] == pytest.approx(18 / 30)
    assert s["mean_acceptance_length"] == pytest.approx(1 + 18 / 10)
    assert s["per_position_acceptance_rate"] == pytest.approx([0.8, 0.6, 0.4])
    assert (s["num_drafts"], s["num_draft_tokens"], s["num_accepted_tokens"]) == (10, 30, 18)
    empty = metrics.spec_decode_summary(metrics.SpecCounters())
    assert empty["acceptance_rate"] is None and empty["mean_acceptance_length"] is None


def test_counters_subtract_and_add() -> None:
    a = metrics.SpecCounters(10, 30, 18, {0: 8, 1: 6})
    b = metrics.SpecCounters(4, 12, 9, {0: 4})
    assert a - b == metrics.SpecCounters(6, 18, 9, {0: 4, 1: 6})
    assert (a - b) + b == a


# --- a sweep against a server that counts drafts ----------------------------------------------------------

# Each completion advances the counters by 4 drafts of 3 tokens, 9 accepted: 3, 3, 3 at positions 0, 1, 2.
PER_REQUEST = metrics.SpecCounters(4, 12, 9, {0: 4, 1: 3, 2: 2})


class MetricsServer:
    """Streams `max_tokens` one-word chunks per completion, and serves the recorded vLLM /metrics text with
    its speculative-decoding counters advanced by PER_REQUEST for every completion so far (or no /metrics
    at all, with expose=False)."""

    def __init__(self, expose: bool = True) -> None:
        self.completions = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a) -> None:
                pass

            def reply(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    data = {"object": "list", "data": [{"id": "llm", "root": "/nowhere/model"}]}
                    return self.reply(200, json.dumps(data).encode(), "application/json")
                if self.path == "/metrics" and expose:
                    return self.reply(200, server.metrics_text().encode(), "text/plain; version=0.0.4")
                self.reply(404, b'{"detail":"Not Found"}', "application/json")

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for i in range(body["max_tokens"]):
                    chunk = {"choices": [{"index": 0, "text": f" w{i}", "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                usage = {
                    "prompt_tokens": len(body["prompt"].split()),
                    "completion_tokens": body["max_tokens"],
                }
                with server.lock:  # counted before the reply ends, as vLLM counts a step before it streams
                    server.completions += 1
                self.wfile.write(
                    f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode()
                )
                self.wfile.flush()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def metrics_text(self) -> str:
        with self.lock:
            n = self.completions
        base = metrics.parse_spec_counters(RECORDED)
        now = {
            "spec_decode_num_drafts_total": base.num_drafts + n * PER_REQUEST.num_drafts,
            "spec_decode_num_draft_tokens_total": base.num_draft_tokens + n * PER_REQUEST.num_draft_tokens,
            "spec_decode_num_accepted_tokens_total": base.num_accepted_tokens
            + n * PER_REQUEST.num_accepted_tokens,
        }

        def advance(m: re.Match) -> str:
            name, labels = m.group(1), m.group(2)
            if name in now:
                return f"vllm:{name}{{{labels}}} {now[name]}"
            pos = int(re.search(r'position="(\d+)"', labels).group(1))
            value = base.accepted_per_position[pos] + n * PER_REQUEST.accepted_per_position[pos]
            return f"vllm:{name}{{{labels}}} {value}"

        return re.sub(
            r"^vllm:(spec_decode_num_\w+_total)\{(.*)\} \S+$", advance, RECORDED, flags=re.MULTILINE
        )

    def __enter__(self) -> MetricsServer:  # noqa: PYI034
        self.thread.start()
        return self

    def __exit__(self, *a) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> workload.Tokenizer:
    """A word-level tokenizer of 343 byte-level words (" wahx" is one token): enough to build prompts from."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers

    words = [f"Ġw{a}{b}{c}" for a in "abcdefg" for b in "hijklmn" for c in "opqrstu"]
    vocab = {w: i for i, w in enumerate(["[UNK]", *words])}
    t = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    d = tmp_path_factory.mktemp("tok")
    t.save(str(d / "tokenizer.json"))
    return workload.load_tokenizer(d)


def test_sweep_reports_each_levels_acceptance(tok: workload.Tokenizer) -> None:
    with MetricsServer() as s:
        opts = options.BenchOptions(
            url=s.url, concurrency="1,3", requests=6, input_len=8, output_len=5, warmup=2
        )
        result = sweep.sweep(opts, tok)
    for lv in result["levels"]:
        # The level's own requests only: not the first request, nor the untimed warm-up ones.
        assert lv["speculative"] == metrics.spec_decode_summary(
            metrics.SpecCounters(6 * 4, 6 * 12, 6 * 9, {0: 6 * 4, 1: 6 * 3, 2: 6 * 2})
        )
    whole = result["speculative"]
    assert (whole["num_drafts"], whole["acceptance_rate"], whole["mean_acceptance_length"]) == (
        48,
        0.75,
        1 + 9 / 4,
    )
    assert whole["per_position_acceptance_rate"] == [1.0, 0.75, 0.5]

    title, columns, rows = report.table(result)
    assert columns[-2:] == ["accept %", "accept len"]
    assert [row[-2:] for row in rows] == [["75.0", "3.25"], ["75.0", "3.25"]]
    (line,) = [n for n in report.notes(result) if n.startswith("speculative decoding")]
    assert "48 drafts, acceptance 75.0% of 144 draft tokens, mean acceptance length 3.25" in line
    assert line.endswith("per position: 1.00, 0.75, 0.50")


def test_nothing_when_the_server_counts_no_drafts(tok: workload.Tokenizer) -> None:
    with MetricsServer(expose=False) as s:
        result = sweep.sweep(
            options.BenchOptions(url=s.url, concurrency="1", requests=2, input_len=8, output_len=3), tok
        )
    assert "speculative" not in result and all("speculative" not in lv for lv in result["levels"])
    _, columns, _ = report.table(result)
    assert "accept %" not in columns
    assert not any(n.startswith("speculative") for n in report.notes(result))
