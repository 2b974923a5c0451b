"""Load-test any OpenAI-compatible endpoint: a concurrency sweep with token-exact prompts and replies.

Every number means what `vllm bench serve` means by it (vllm/benchmarks/serve.py, `calculate_metrics`, and
lib/endpoint_request_func.py), so results can be read next to vLLM's own:

* A request is timed from just before it is sent. Every streamed SSE message that carries a non-empty
  `choices` list is a token event; the usage-only message at the end is not.
* TTFT: first token event - send time.
* ITL: the gaps between successive token events of one request, pooled over all requests.
* E2E latency: last token event - send time (not the time of `[DONE]`).
* Output tokens: `usage.completion_tokens` of the stream (we ask for `stream_options.include_usage`); only
  when the server sends no usage do we count the reply's tokens with the tokenizer. Prompt tokens likewise
  come from `usage.prompt_tokens` when present.
* TPOT: (latency - TTFT) / (output tokens - 1), per request with more than one output token.
* Duration: from just before the first request of a level is sent until the last one has finished.
  Output throughput = output tokens of successful requests / duration; total token throughput adds their
  prompt tokens; request throughput = successful requests / duration.
* Mean, median, population standard deviation, and percentiles with linear interpolation between the
  closest ranks (numpy's default). Where vLLM reports 0 for a metric with no samples, we report null.

Requests at one concurrency level are all available at once (vLLM's `--request-rate inf`) and at most
`concurrency` are in flight (`--max-concurrency`); they are sent in order.

Cost per million output tokens = GPU $/hour x GPU count / (output tok/s x 3600) x 1e6, at the catalog's list
price: what the sweep's throughput would cost if the GPUs were busy the whole time.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import math
import random
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Self

import httpx

from . import catalog

SCHEMA = "gpt-oss-modal/bench/v1"
DEFAULT_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0)
METRICS = ("ttft", "tpot", "itl", "e2el")
Endpoint = Literal["completions", "chat"]
ENDPOINT_PATHS: dict[str, str] = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


class BenchError(RuntimeError):
    """The benchmark cannot run: the message is one line saying why and what to do."""


# --- metric math (pure) ---------------------------------------------------------------------------------


@dataclass
class RequestRecord:
    """What one streamed request measured; times in seconds (time.perf_counter)."""

    success: bool
    prompt_len: int = 0
    output_tokens: int = 0
    ttft: float = 0.0
    latency: float = 0.0
    itl: list[float] = field(default_factory=list)
    start_time: float = 0.0
    expected_prompt_len: int = 0
    expected_output_len: int = 0
    error: str = ""


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0-100), linear interpolation between closest ranks; None for no values."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is not in 0..100")
    if not values:
        return None
    xs = sorted(values)
    rank = (len(xs) - 1) * p / 100.0
    lo = math.floor(rank)
    hi = math.ceil(rank)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


def tpot(record: RequestRecord) -> float | None:
    """Time per output token after the first; None when the request made at most one token."""
    if not record.success or record.output_tokens <= 1:
        return None
    return (record.latency - record.ttft) / (record.output_tokens - 1)


def percentile_key(p: float) -> str:
    return f"p{int(p)}" if float(p).is_integer() else f"p{p:g}"


def distribution_ms(
    values_s: Sequence[float], name: str, percentiles: Sequence[float]
) -> dict[str, float | None]:
    """mean/median/std and the chosen percentiles of values in seconds, as `{stat}_{name}_ms` milliseconds."""
    out: dict[str, float | None] = {}
    if values_s:
        out[f"mean_{name}_ms"] = statistics.fmean(values_s) * 1000
        out[f"median_{name}_ms"] = statistics.median(values_s) * 1000
        out[f"std_{name}_ms"] = statistics.pstdev(values_s) * 1000
    else:
        out[f"mean_{name}_ms"] = out[f"median_{name}_ms"] = out[f"std_{name}_ms"] = None
    for p in percentiles:
        v = percentile(values_s, p)
        out[f"{percentile_key(p)}_{name}_ms"] = None if v is None else v * 1000
    return out


def cost_per_million_output_tokens(usd_per_hour: float, gpu_count: int, output_tok_s: float) -> float | None:
    """Dollars per 1e6 output tokens when the GPUs produce output_tok_s the whole hour; None at 0 tok/s."""
    if output_tok_s <= 0:
        return None
    return usd_per_hour * gpu_count / (output_tok_s * 3600.0) * 1e6


def last_line(error: str, limit: int = 300) -> str:
    """The telling line of an error (a traceback's last), shortened."""
    lines = error.strip().splitlines()
    return lines[-1][:limit] if lines else "unknown error"


def summarize(
    records: Sequence[RequestRecord],
    duration_s: float,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> dict[str, Any]:
    """The level's metrics from its request records, as vLLM's calculate_metrics defines them."""
    ok = [r for r in records if r.success]
    errors = [r for r in records if not r.success]
    total_in = sum(r.prompt_len for r in ok)
    total_out = sum(r.output_tokens for r in ok)
    tpots = [t for t in (tpot(r) for r in ok) if t is not None]
    itls = [gap for r in ok for gap in r.itl]
    dur = duration_s if duration_s > 0 else float("nan")
    out: dict[str, Any] = {
        "num_requests": len(records),
        "completed": len(ok),
        "errors": len(errors),
        "duration_s": duration_s,
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(ok) / dur if duration_s > 0 else None,
        "output_throughput": total_out / dur if duration_s > 0 else None,
        "total_token_throughput": (total_in + total_out) / dur if duration_s > 0 else None,
    }
    out |= distribution_ms([r.ttft for r in ok], "ttft", percentiles)
    out |= distribution_ms(tpots, "tpot", percentiles)
    out |= distribution_ms(itls, "itl", percentiles)
    out |= distribution_ms([r.latency for r in ok], "e2el", percentiles)
    # Token-exactness: replies (and prompts, where the server reports them) of the length we asked for.
    out["output_len_mismatches"] = sum(
        1 for r in ok if r.expected_output_len and r.output_tokens != r.expected_output_len
    )
    out["prompt_len_mismatches"] = sum(
        1 for r in ok if r.expected_prompt_len and r.prompt_len != r.expected_prompt_len
    )
    seen: list[str] = []
    for r in errors:
        line = last_line(r.error)
        if line not in seen:
            seen.append(line)
    out["error_samples"] = seen[:5]
    return out


# --- tokenizer and workload -----------------------------------------------------------------------------


class Tokenizer:
    """Encode/decode without special tokens, over either a `tokenizers.Tokenizer` or a transformers one."""

    def __init__(self, impl: Any, name: str) -> None:
        self.impl = impl
        self.name = name
        self._fast = impl.__class__.__module__.startswith("tokenizers")

    def encode(self, text: str) -> list[int]:
        if self._fast:
            return list(self.impl.encode(text, add_special_tokens=False).ids)
        return list(self.impl.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.impl.decode(list(ids), skip_special_tokens=False)

    def vocab(self) -> dict[str, int]:
        return dict(self.impl.get_vocab())

    def special_ids(self) -> set[int]:
        if self._fast:
            return {i for i, t in self.impl.get_added_tokens_decoder().items() if t.special}
        return set(getattr(self.impl, "all_special_ids", []))


def load_tokenizer(name_or_path: str | Path) -> Tokenizer:
    """A local tokenizer dir or tokenizer.json, or a Hugging Face repo id (downloaded once, then cached)."""
    p = Path(name_or_path).expanduser()
    try:
        from tokenizers import Tokenizer as FastTokenizer
    except ImportError:  # pragma: no cover - tokenizers comes with transformers and vllm
        FastTokenizer = None  # type: ignore[assignment]
    if FastTokenizer is not None:
        if p.is_file():
            return Tokenizer(FastTokenizer.from_file(str(p)), str(p))
        if (p / "tokenizer.json").is_file():
            return Tokenizer(FastTokenizer.from_file(str(p / "tokenizer.json")), str(p))
    if p.exists() or FastTokenizer is None:
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise BenchError(
                f"cannot load tokenizer {name_or_path}: pip install tokenizers (the `bench` extra has it)"
            ) from None
        try:
            return Tokenizer(
                AutoTokenizer.from_pretrained(str(p if p.exists() else name_or_path)), str(name_or_path)
            )
        except Exception as e:  # noqa: BLE001 - any loader failure is one line for the user
            raise BenchError(f"cannot load tokenizer {name_or_path}: {type(e).__name__}: {e}") from None
    try:
        return Tokenizer(FastTokenizer.from_pretrained(str(name_or_path)), str(name_or_path))
    except Exception as e:  # noqa: BLE001
        raise BenchError(
            f"cannot load tokenizer {name_or_path!r} from Hugging Face ({type(e).__name__}: {e}); "
            "pass --tokenizer with a local directory that holds tokenizer.json"
        ) from None


@dataclass(frozen=True)
class Prompt:
    text: str
    prompt_len: int  # tokens, as our tokenizer counts them (exact by construction)
    output_len: int


def length_bounds(mean: int, range_ratio: float, minimum: int) -> tuple[int, int]:
    """The integer range a length is drawn from: vLLM's random dataset, [floor(m(1-r)), ceil(m(1+r))]."""
    if not 0 <= range_ratio < 1:
        raise BenchError(f"--random-range-ratio {range_ratio} must be in [0, 1)")
    lo = max(math.floor(mean * (1 - range_ratio)), minimum)
    hi = max(math.ceil(mean * (1 + range_ratio)), minimum)
    return lo, hi


_WORD = re.compile(r"^(Ġ|▁| )[a-z]{3,12}$")


def word_pool(tok: Tokenizer) -> list[int]:
    """Token ids that are one plain lowercase word with a leading space: " word" re-encodes to itself,
    so a run of them keeps its token count through decode and encode."""
    pool = sorted(i for s, i in tok.vocab().items() if _WORD.match(s))
    specials = tok.special_ids()
    pool = [i for i in pool if i not in specials]
    checked = [i for i in pool[:: max(1, len(pool) // 2000)]]  # spot-check the pattern on this vocab
    if len(pool) < 100 or any(tok.encode(tok.decode([i])) != [i] for i in checked[:200]):
        pool = [i for i in pool if tok.encode(tok.decode([i])) == [i]]
    if len(pool) < 100:
        raise BenchError(f"tokenizer {tok.name}: too few plain-word tokens to build prompts from")
    return pool


def exact_prompt(tok: Tokenizer, pool: Sequence[int], n_tokens: int, rng: random.Random) -> tuple[str, int]:
    """Text that the tokenizer encodes to exactly n_tokens tokens (or the nearest, after 10 tries)."""
    ids = [pool[rng.randrange(len(pool))] for _ in range(n_tokens)]
    text = tok.decode(ids)
    for _ in range(10):
        got = tok.encode(text)
        if len(got) == n_tokens:
            return text, n_tokens
        if len(got) > n_tokens:
            got = got[:n_tokens]
        else:
            got = got + [pool[rng.randrange(len(pool))] for _ in range(n_tokens - len(got))]
        text = tok.decode(got)
    return text, len(tok.encode(text))


def make_workload(
    tok: Tokenizer,
    num_prompts: int,
    input_len: int,
    output_len: int,
    range_ratio: float = 0.0,
    seed: int = 0,
) -> list[Prompt]:
    """num_prompts distinct random prompts; lengths drawn uniformly as vLLM's random dataset draws them."""
    if input_len < 1 or output_len < 1:
        raise BenchError("--input-len and --output-len must be at least 1 token")
    rng = random.Random(seed)
    pool = word_pool(tok)
    in_lo, in_hi = length_bounds(input_len, range_ratio, 1)
    out_lo, out_hi = length_bounds(output_len, range_ratio, 1)
    prompts = []
    for _ in range(num_prompts):
        n_in = rng.randint(in_lo, in_hi)
        n_out = rng.randint(out_lo, out_hi)
        text, real = exact_prompt(tok, pool, n_in, rng)
        prompts.append(Prompt(text, real, n_out))
    return prompts


# --- the HTTP side --------------------------------------------------------------------------------------


@dataclass
class Target:
    base_url: str  # scheme://host[:port], without /v1
    model: str  # served model name
    endpoint: Endpoint = "completions"
    api_key: str | None = None
    modal_key: str | None = None
    modal_secret: str | None = None
    ignore_eos: bool = True
    request_timeout: float = 3600.0
    http_client: str = "auto"  # auto (aiohttp if installed), aiohttp or httpx: see Session

    @property
    def url(self) -> str:
        return self.base_url + ENDPOINT_PATHS[self.endpoint]

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        if self.modal_key:
            h["Modal-Key"] = self.modal_key
        if self.modal_secret:
            h["Modal-Secret"] = self.modal_secret
        return h

    def payload(self, prompt: Prompt) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt.text}]
            body["max_completion_tokens"] = prompt.output_len
        else:
            body["prompt"] = prompt.text
            body["max_tokens"] = prompt.output_len
        if self.ignore_eos:
            # vLLM's extension: with it, neither EOS nor the generation config's stop tokens end a reply, so
            # every reply is exactly max_tokens long (the summary counts any that are not). The same body
            # as `vllm bench serve --ignore-eos`; no `min_tokens`, whose logits processor would add work to
            # every decode step of the batch.
            body["ignore_eos"] = True
        return body


def normalize_base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://", url):
        raise BenchError(f"{url!r} is not an http(s) URL; pass the endpoint as --url https://...")
    for suffix in ("/v1/chat/completions", "/v1/completions", "/v1"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
            break
    return url


class SSEParser:
    """Split a byte stream into SSE `data:` payloads; comments (`:` lines) and other fields are dropped."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._buf = ""

    def feed(self, chunk: bytes) -> list[str]:
        self._buf += self._decoder.decode(chunk).replace("\r\n", "\n")
        out = []
        while "\n\n" in self._buf:
            message, self._buf = self._buf.split("\n\n", 1)
            data = [line[5:].lstrip(" ") for line in message.split("\n") if line.startswith("data:")]
            if data:
                out.append("\n".join(data))
        return out


HttpClient = Literal["auto", "aiohttp", "httpx"]


def aiohttp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("aiohttp") is not None


class Session:
    """The connection pool of one level, over aiohttp when it is installed, else httpx.

    aiohttp is preferred because the client must not be what limits the benchmark: streaming from vLLM, it
    spends about a third of the CPU per token that httpx does (~0.2 ms vs ~0.6 ms on a 2-core box; anyio
    re-arms the socket for every read), and at thousands of tokens/s a Python client saturates a core.
    Both send the same requests and see the same bytes, so every metric means the same either way.
    """

    def __init__(self, concurrency: int, request_timeout: float, client: HttpClient = "auto") -> None:
        if client == "auto":
            client = "aiohttp" if aiohttp_available() else "httpx"
        if client == "aiohttp" and not aiohttp_available():
            raise BenchError("--http-client aiohttp: aiohttp is not installed (pip install aiohttp)")
        self.kind: str = client
        self.concurrency = concurrency
        self.request_timeout = request_timeout
        self._impl: Any = None

    async def __aenter__(self) -> Self:
        if self.kind == "aiohttp":
            import aiohttp

            connector = aiohttp.TCPConnector(
                limit=self.concurrency,
                limit_per_host=self.concurrency,
                keepalive_timeout=60,
                ttl_dns_cache=300,
            )
            self._impl = aiohttp.ClientSession(
                connector=connector,
                trust_env=True,
                timeout=aiohttp.ClientTimeout(total=self.request_timeout, sock_connect=60),
            )
        else:
            self._impl = httpx.AsyncClient(
                limits=httpx.Limits(
                    max_connections=self.concurrency,
                    max_keepalive_connections=self.concurrency,
                    keepalive_expiry=60,
                ),
                timeout=httpx.Timeout(self.request_timeout, connect=60.0),
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.kind == "aiohttp":
            await self._impl.close()
        else:
            await self._impl.aclose()

    @contextlib.asynccontextmanager
    async def post_stream(self, url: str, body: dict[str, Any], headers: dict[str, str]):
        """Yield (status, the body's byte chunks as they arrive)."""
        if self.kind == "aiohttp":
            async with self._impl.post(url, json=body, headers=headers) as resp:
                yield resp.status, resp.content.iter_any()
        else:
            async with self._impl.stream("POST", url, json=body, headers=headers) as resp:
                yield resp.status_code, resp.aiter_raw()

    async def get_json(self, url: str, headers: dict[str, str]) -> tuple[int, Any]:
        if self.kind == "aiohttp":
            async with self._impl.get(url, headers=headers) as resp:
                return resp.status, (await resp.json(content_type=None) if resp.status == 200 else None)
        resp = await self._impl.get(url, headers=headers)
        return resp.status_code, (resp.json() if resp.status_code == 200 else None)


async def send_request(
    session: Session,
    target: Target,
    prompt: Prompt,
    count_tokens: Callable[[str], int] | None = None,
) -> RequestRecord:
    """One streamed request, timed as vLLM's benchmark times it."""
    rec = RequestRecord(
        success=False,
        prompt_len=prompt.prompt_len,
        expected_prompt_len=prompt.prompt_len,
        expected_output_len=prompt.output_len,
    )
    text_parts: list[str] = []
    usage_tokens: int | None = None
    first = False
    st = time.perf_counter()
    rec.start_time = st
    last = st
    try:
        async with session.post_stream(target.url, target.payload(prompt), target.headers()) as (
            status,
            chunks,
        ):
            if status != 200:
                raw = b"".join([c async for c in chunks])
                body = raw.decode("utf-8", "replace").strip().replace("\n", " ")
                rec.error = f"HTTP {status}: {body[:300]}"
                return rec
            parser = SSEParser()
            async for chunk in chunks:
                for data in parser.feed(chunk):
                    if data == "[DONE]":
                        continue
                    now = time.perf_counter()
                    msg = json.loads(data)
                    if choices := msg.get("choices"):
                        if not first:
                            first = True
                            rec.ttft = now - st
                        else:
                            rec.itl.append(now - last)
                        last = now
                        c0 = choices[0]
                        piece = (
                            c0.get("text")
                            if target.endpoint == "completions"
                            else (c0.get("delta") or {}).get("content")
                        )
                        text_parts.append(piece or "")
                    elif usage := msg.get("usage"):
                        usage_tokens = usage.get("completion_tokens")
                        if usage.get("prompt_tokens") is not None:
                            rec.prompt_len = usage["prompt_tokens"]
                    elif err := msg.get("error"):
                        rec.error = f"server error in stream: {err}"
    except Exception as e:  # noqa: BLE001 - a failed request is a counted error, not a crash
        rec.error = f"{type(e).__name__}: {e}"
        return rec
    if not first:
        rec.error = rec.error or "the stream carried no tokens"
        return rec
    rec.success = True
    rec.latency = last - st
    if usage_tokens is not None:
        rec.output_tokens = usage_tokens
    elif count_tokens is not None:
        rec.output_tokens = count_tokens("".join(text_parts))
    else:
        rec.output_tokens = 1 + len(rec.itl)
    return rec


async def served_model(session: Session, target: Target) -> str | None:
    """The first model the server lists at /v1/models, or None if it does not say."""
    try:
        status, data = await session.get_json(target.base_url + "/v1/models", target.headers())
        if status == 200 and isinstance(data, dict) and data.get("data"):
            return data["data"][0].get("id")
    except Exception:  # noqa: BLE001 - no name is fine: the caller falls back to "llm"
        return None
    return None


@dataclass
class LevelRun:
    concurrency: int
    records: list[RequestRecord]
    duration_s: float


async def run_level(
    target: Target,
    prompts: Sequence[Prompt],
    concurrency: int,
    *,
    num_requests: int | None = None,
    duration_s: float | None = None,
    warmup: int = 0,
    on_done: Callable[[RequestRecord], None] | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> LevelRun:
    """At most `concurrency` requests in flight, sent in order: `num_requests` of them, or as many as start
    within `duration_s` seconds (cycling through the prompts). Warm-up requests go first, not counted."""
    if (num_requests is None) == (duration_s is None):
        raise ValueError("give exactly one of num_requests and duration_s")
    session = Session(concurrency, target.request_timeout, target.http_client)  # type: ignore[arg-type]
    async with session as client:
        if warmup > 0:
            sem = asyncio.Semaphore(concurrency)

            async def warm(i: int) -> None:
                async with sem:
                    await send_request(client, target, prompts[i % len(prompts)], count_tokens)

            await asyncio.gather(*(warm(i) for i in range(warmup)))

        records: list[RequestRecord] = []
        counter = iter(range(10**12))
        start = time.perf_counter()
        deadline = start + duration_s if duration_s is not None else None

        async def worker() -> None:
            while True:
                i = next(counter)
                if num_requests is not None and i >= num_requests:
                    return
                if deadline is not None and time.perf_counter() >= deadline:
                    return
                rec = await send_request(client, target, prompts[i % len(prompts)], count_tokens)
                records.append(rec)
                if on_done is not None:
                    on_done(rec)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        duration = time.perf_counter() - start
    records.sort(key=lambda r: r.start_time)
    return LevelRun(concurrency, records, duration)


# --- the sweep ------------------------------------------------------------------------------------------


@dataclass
class Workload:
    input_len: int
    output_len: int
    random_range_ratio: float = 0.0
    num_requests: int | None = None  # per level; None with duration_s, or the default 4 x concurrency (>= 8)
    duration_s: float | None = None
    warmup: int = 0
    seed: int = 0

    def requests_for(self, concurrency: int) -> int | None:
        if self.duration_s is not None:
            return None
        return self.num_requests if self.num_requests is not None else max(8, 4 * concurrency)


@dataclass
class GpuPrice:
    name: str
    count: int
    usd_per_hour: float  # per GPU
    price_date: str = catalog.PRICE_DATE


def parse_concurrency(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise BenchError(
            f"--concurrency {text!r}: give whole numbers separated by commas, e.g. 1,4,16"
        ) from None
    if not levels or any(c < 1 for c in levels):
        raise BenchError(f"--concurrency {text!r}: give whole numbers of at least 1, e.g. 1,4,16")
    return levels


def parse_percentiles(text: str) -> list[float]:
    try:
        ps = [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise BenchError(f"--percentiles {text!r}: give numbers separated by commas, e.g. 50,90,99") from None
    if not ps or any(not 0 < p <= 100 for p in ps):
        raise BenchError(f"--percentiles {text!r}: each must be in (0, 100]")
    return ps


def level_result(run: LevelRun, percentiles: Sequence[float], gpu: GpuPrice | None) -> dict[str, Any]:
    res = {"concurrency": run.concurrency} | summarize(run.records, run.duration_s, percentiles)
    res["usd_per_m_output_tokens"] = (
        cost_per_million_output_tokens(gpu.usd_per_hour, gpu.count, res["output_throughput"] or 0.0)
        if gpu
        else None
    )
    return res


def build_result(
    *,
    target: Target,
    tokenizer: str,
    model: str | None,
    workload: Workload,
    percentiles: Sequence[float],
    gpu: GpuPrice | None,
    levels: list[dict[str, Any]],
    runs: list[LevelRun] | None = None,
    include_requests: bool = False,
    http_client: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "base_url": target.base_url,
        "endpoint": ENDPOINT_PATHS[target.endpoint],
        "served_model": target.model,
        "model": model,
        "tokenizer": tokenizer,
        "http_client": http_client,
        "workload": {
            "dataset": "random",
            "input_len": workload.input_len,
            "output_len": workload.output_len,
            "random_range_ratio": workload.random_range_ratio,
            "requests_per_level": workload.num_requests,
            "duration_s_per_level": workload.duration_s,
            "warmup_requests": workload.warmup,
            "ignore_eos": target.ignore_eos,
            "seed": workload.seed,
            "request_rate": "inf",
        },
        "percentiles": list(percentiles),
        "gpu": None if gpu is None else asdict(gpu),
        "levels": levels,
    }
    if include_requests and runs is not None:
        out["requests"] = {str(r.concurrency): [asdict(rec) for rec in r.records] for r in runs}
    return out


def sweep(
    target: Target,
    tok: Tokenizer,
    levels: Sequence[int],
    workload: Workload,
    *,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    gpu: GpuPrice | None = None,
    model: str | None = None,
    progress: Any = None,
    include_requests: bool = False,
    on_level: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every concurrency level one after the other and return the result document."""
    return asyncio.run(
        _sweep(target, tok, levels, workload, percentiles, gpu, model, progress, include_requests, on_level)
    )


async def _sweep(
    target: Target,
    tok: Tokenizer,
    levels: Sequence[int],
    workload: Workload,
    percentiles: Sequence[float],
    gpu: GpuPrice | None,
    model: str | None,
    progress: Any,
    include_requests: bool,
    on_level: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    pool_size = max([workload.requests_for(c) or 256 for c in levels] + [workload.warmup, 1])
    prompts = make_workload(
        tok, pool_size, workload.input_len, workload.output_len, workload.random_range_ratio, workload.seed
    )

    def count_tokens(text: str) -> int:
        return len(tok.encode(text))

    # A first request checks the URL, auth and model name before anything is timed (vLLM does the same).
    async with Session(1, target.request_timeout, target.http_client) as client:  # type: ignore[arg-type]
        if not target.model:
            target.model = await served_model(client, target) or "llm"
        probe = await send_request(client, target, prompts[0], count_tokens)
        http_client = client.kind
    if not probe.success:
        raise BenchError(f"the first request to {target.url} failed: {last_line(probe.error)}")

    results: list[dict[str, Any]] = []
    runs: list[LevelRun] = []
    for c in levels:
        n = workload.requests_for(c)
        task = None
        on_done = None
        if progress is not None:
            # A bar of n requests, or a spinner counting requests for a duration run.
            task = progress.add_task(f"concurrency {c}", total=n)

            def on_done(_rec: Any, _t: Any = task) -> None:
                progress.advance(_t)

        run = await run_level(
            target,
            prompts,
            c,
            num_requests=n,
            duration_s=workload.duration_s,
            warmup=workload.warmup,
            on_done=on_done,
            count_tokens=count_tokens,
        )
        if progress is not None and task is not None:
            progress.update(task, total=len(run.records), completed=len(run.records))
        runs.append(run)
        res = level_result(run, percentiles, gpu)
        results.append(res)
        if on_level is not None:
            on_level(res)
    return build_result(
        http_client=http_client,
        target=target,
        tokenizer=tok.name,
        model=model,
        workload=workload,
        percentiles=percentiles,
        gpu=gpu,
        levels=results,
        runs=runs,
        include_requests=include_requests,
    )


# --- output ---------------------------------------------------------------------------------------------


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def plot(result: dict[str, Any], path: Path) -> None:
    """Throughput against latency, one point per concurrency level (PNG, matplotlib's Agg backend)."""
    try:
        import matplotlib
    except ImportError:
        raise BenchError("--plot needs matplotlib: pip install 'gpt-oss-modal[bench]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    levels = [lv for lv in result["levels"] if lv.get("output_throughput")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    wl = result["workload"]
    title = (
        f"{result.get('model') or result['served_model']} @ {result['base_url']}  "
        f"(in {wl['input_len']} / out {wl['output_len']} tokens)"
    )
    fig.suptitle(title, fontsize=10)
    for ax, key, label in (
        (ax1, "median_tpot_ms", "median TPOT (ms)"),
        (ax2, "median_e2el_ms", "median end-to-end latency (ms)"),
    ):
        pts = [
            (lv[key], lv["output_throughput"], lv["concurrency"]) for lv in levels if lv.get(key) is not None
        ]
        if pts:
            xs, ys, _ = zip(*pts)
            ax.plot(xs, ys, marker="o")
            for x, y, c in pts:
                ax.annotate(f"c={c}", (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("output tokens/s")
        ax.grid(True, alpha=0.3)
    gpu = result.get("gpu")
    if gpu and levels:
        costs = ", ".join(
            f"c={lv['concurrency']}: ${lv['usd_per_m_output_tokens']:.2f}"
            for lv in levels
            if lv.get("usd_per_m_output_tokens") is not None
        )
        fig.text(
            0.01,
            0.01,
            f"$ per 1M output tokens on {gpu['name']} x{gpu['count']} "
            f"(list price {gpu['price_date']}): {costs}",
            fontsize=8,
        )
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


# --- the command ----------------------------------------------------------------------------------------


@dataclass
class Options:
    """What `gpt-oss-modal bench` was asked for, after the config layers resolved model and GPU."""

    url: str
    concurrency: str = "1,4,16"
    requests: int | None = None
    duration: float | None = None
    input_len: int = 1024
    output_len: int = 128
    random_range_ratio: float = 0.0
    seed: int = 0
    warmup: int = 0
    endpoint: str = "completions"
    served_model_name: str | None = None
    tokenizer: str | None = None
    ignore_eos: bool = True
    api_key: str | None = None
    modal_key: str | None = None
    modal_secret: str | None = None
    model: str | None = None  # the GPT-OSS model behind the URL (catalog id or "tiny")
    model_explicit: bool = True  # False: the config's default, and the server may say better
    gpu: GpuPrice | None = None  # the price of the GPU(s) behind the URL
    gpu_explicit: bool = True  # False: the config's default, which says nothing about a local tiny server
    percentiles: str = "50,90,99"
    out: Path | None = None
    plot: Path | None = None
    as_json: bool = False
    save_requests: bool = False
    request_timeout: float = 3600.0
    http_client: str = "auto"


def model_root(target: Target) -> tuple[str | None, str | None]:
    """(served model id, its `root`) from /v1/models; vLLM's root is the checkpoint path or HF repo id."""
    try:
        r = httpx.get(target.base_url + "/v1/models", headers=target.headers(), timeout=60)
    except httpx.HTTPError as e:
        raise BenchError(f"cannot reach {target.base_url}: {type(e).__name__}: {e}") from None
    if r.status_code in (401, 403):
        raise BenchError(
            f"{target.base_url} refused the request (HTTP {r.status_code}): pass --api-key, or "
            "--modal-key/--modal-secret (env MODAL_KEY/MODAL_SECRET) for Modal proxy auth"
        )
    if r.status_code != 200:
        return None, None
    try:
        data = r.json().get("data") or []
    except ValueError:
        return None, None
    if not data:
        return None, None
    return data[0].get("id"), data[0].get("root")


def infer_model(root: str | None) -> str | None:
    """Which catalog model (or `tiny`) a server runs, from the `root` it reports at /v1/models: a Hugging Face
    id, or a local checkpoint whose config.json has a catalog model's shape; None when it cannot tell."""
    if not root:
        return None
    p = Path(root)
    if not p.is_dir():
        resolved = catalog.resolve_model_id(root)
        return resolved if resolved in catalog.MODELS else None
    try:
        cfg = json.loads((p / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if cfg.get("model_type") != "gpt_oss":
        return None
    for m in catalog.MODELS.values():
        if cfg.get("num_hidden_layers") == m.num_layers and cfg.get("num_local_experts") == m.num_experts:
            return m.id
    return catalog.TINY if cfg.get("hidden_size", 1 << 20) < 1024 else None


def default_tokenizer(model: str | None, root: str | None) -> str:
    """--tokenizer unset: the server's own checkpoint if it is a local dir, the tiny checkpoint for `tiny`,
    else the model's Hugging Face repo."""
    if root and (Path(root) / "tokenizer.json").is_file():
        return root
    if model == catalog.TINY:
        from . import tiny  # type: ignore[attr-defined]

        return str(tiny.ensure_checkpoint(scripted=True))
    if root and re.fullmatch(r"[\w.-]+/[\w.-]+", root) and not Path(root).exists():
        return root
    return model or "openai/gpt-oss-20b"


def run_command(opts: Options, console: Any, err: Any) -> dict[str, Any]:
    """Everything `gpt-oss-modal bench` does; raises BenchError with one line when it cannot."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    if opts.http_client not in ("auto", "aiohttp", "httpx"):
        raise BenchError(f"--http-client {opts.http_client!r}: choose auto, aiohttp or httpx")
    if opts.endpoint not in ENDPOINT_PATHS:
        raise BenchError(f"--endpoint {opts.endpoint!r}: choose completions or chat")
    if opts.requests is not None and opts.duration is not None:
        raise BenchError("give --requests or --duration, not both")
    if opts.requests is not None and opts.requests < 1:
        raise BenchError("--requests must be at least 1")
    if opts.duration is not None and opts.duration <= 0:
        raise BenchError("--duration must be a positive number of seconds")
    levels = parse_concurrency(opts.concurrency)
    percentiles = parse_percentiles(opts.percentiles)
    target = Target(
        base_url=normalize_base_url(opts.url),
        model=opts.served_model_name or "",
        endpoint=opts.endpoint,  # type: ignore[arg-type]
        api_key=opts.api_key,
        modal_key=opts.modal_key,
        modal_secret=opts.modal_secret,
        ignore_eos=opts.ignore_eos,
        request_timeout=opts.request_timeout,
        http_client=opts.http_client,
    )
    served, root = model_root(target)
    if not target.model:
        target.model = served or "llm"
    model = opts.model if opts.model_explicit else (infer_model(root) or opts.model)
    # No price for the tiny CPU model, unless --gpu (or the config) names the GPU to price it at.
    gpu = opts.gpu if opts.gpu_explicit or model != catalog.TINY else None
    tok_name = opts.tokenizer or default_tokenizer(model, root)
    tok = load_tokenizer(tok_name)
    workload = Workload(
        input_len=opts.input_len,
        output_len=opts.output_len,
        random_range_ratio=opts.random_range_ratio,
        num_requests=opts.requests,
        duration_s=opts.duration,
        warmup=opts.warmup,
        seed=opts.seed,
    )
    show = err if opts.as_json else console
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
        refresh_per_second=4,  # the client shares the CPU with what it measures when the server is local
    )
    with progress:
        result = sweep(
            target,
            tok,
            levels,
            workload,
            percentiles=percentiles,
            gpu=gpu,
            model=model,
            progress=progress,
            include_requests=opts.save_requests,
        )
    if opts.out is not None:
        write_json(result, opts.out)
    if opts.plot is not None:
        plot(result, opts.plot)

    p_hi = percentile_key(max(percentiles))
    t = Table(
        title=f"{target.url}  model {target.model}  in {opts.input_len} / out {opts.output_len} tokens",
        title_justify="left",
    )
    for col in (
        "conc",
        "ok",
        "err",
        "req/s",
        "out tok/s",
        "total tok/s",
        "TTFT p50 ms",
        f"TTFT {p_hi} ms",
        "TPOT p50 ms",
        f"TPOT {p_hi} ms",
        "ITL p50 ms",
        "E2E p50 ms",
        "$/M out",
    ):
        t.add_column(col, justify="right")

    def f(v: float | None, nd: int = 1) -> str:
        return "-" if v is None else f"{v:,.{nd}f}"

    for lv in result["levels"]:
        t.add_row(
            str(lv["concurrency"]), str(lv["completed"]), str(lv["errors"]),
            f(lv["request_throughput"], 2), f(lv["output_throughput"]), f(lv["total_token_throughput"]),
            f(lv["median_ttft_ms"]), f(lv[f"{p_hi}_ttft_ms"]), f(lv["median_tpot_ms"], 2),
            f(lv[f"{p_hi}_tpot_ms"], 2), f(lv["median_itl_ms"], 2), f(lv["median_e2el_ms"]),
            f(lv["usd_per_m_output_tokens"], 2),
        )  # fmt: skip
    show.print(t)
    if gpu is not None:
        show.print(
            f"$/M out: {gpu.name} x{gpu.count} at ${gpu.usd_per_hour:.4f}/GPU-hour "
            f"(Modal list price, {gpu.price_date}), kept busy at the measured output rate.",
            highlight=False,
        )
    for lv in result["levels"]:
        for e in lv["error_samples"]:
            show.print(f"[yellow]c={lv['concurrency']} error:[/] {e}", highlight=False)
        if lv["output_len_mismatches"] and opts.ignore_eos:
            show.print(
                f"[yellow]c={lv['concurrency']}: {lv['output_len_mismatches']} replies were not the requested "
                "length (does the server honour ignore_eos?)[/]",
                highlight=False,
            )
    if opts.out is not None:
        show.print(f"results: {opts.out}", highlight=False)
    if opts.plot is not None:
        show.print(f"plot: {opts.plot}", highlight=False)
    if opts.as_json:
        print(json.dumps(result, indent=2))
    return result
