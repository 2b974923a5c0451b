"""Study v3 on an H200: the planner's memory parts per card (budgets of A10G, A100-40GB, H100 emulated), the
engine's CPU and RAM under load, and where a warm restart of `fast` spends its time.

Self-contained: builds the `vllm serve` command itself (today's `fast` boot mode, copied from the product's
engine command), with the gpt-oss-20b architecture and dummy weights in /root/model.

    python3 benchmarks/study_v3.py series1 --runs a b --out /root/res --deadline 540
    python3 benchmarks/study_v3.py series2 --out /root/res --deadline 560

Every vLLM output line is written to <run>/server.log with its arrival time in seconds since the launch
(sub-second phase times; vLLM's own timestamps have one-second resolution). Servers are started in their own
process group and that group is always killed before the script goes on or returns.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

GIB = 1024**3
MODEL = "/root/model"
FAST_CC = '{"mode":"NONE","cudagraph_mode":"FULL_DECODE_ONLY","cudagraph_capture_sizes":[1,2,4,8,16,24,32,40,48,50]}'
BASE_ENV = {
    "TIKTOKEN_ENCODINGS_BASE": "/root/tiktoken",
    "VLLM_USE_FLASHINFER_SAMPLER": "0",
    "HF_HUB_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "PYTHONUNBUFFERED": "1",  # so each log line arrives when it is written (phase times)
}
# Catalog totals (GiB) of the emulated cards; the budget is 0.9 x this, as vLLM would have it on that card.
CARDS = {"A10G": 22.0, "A100-40GB": 39.4, "H100": 81559 / 1024}
MARLIN = ["--moe-backend", "marlin", "--attention-backend", "TRITON_ATTN"]

LOG_FIGURES = {
    "weights_gib": r"Model loading took ([\d.]+) GiB",
    "load_s": r"Model loading took [\d.]+ GiB(?: memory)? and ([\d.]+) s",
    "kv_cache_gib": r"Available KV cache memory: ([\d.]+) GiB",
    "kv_tokens": r"GPU KV cache size: ([\d,]+) tokens",
    "max_concurrency": r"Maximum concurrency for [\d,]+ tokens per request: ([\d.]+)x",
    "graph_s": r"Graph capturing finished in ([\d.]+) secs",
    "graph_gib": r"Graph capturing finished in [\d.]+ secs, took ([\d.]+) GiB",
    "graph_pool_actual_gib": r"CUDA graph pool memory: ([\d.]+) GiB \(actual\)",
    "graph_pool_estimated_gib": r"CUDA graph pool memory: [\d.]+ GiB \(actual\), ([\d.]+) GiB \(estimated\)",
    "graph_estimate_gib": r"Estimated CUDA graph memory: ([\d.]+) GiB total",
    "free_on_startup_gib": r"Free memory on device \(([\d.]+)/[\d.]+ GiB\)",
    "total_seen_gib": r"Free memory on device \([\d.]+/([\d.]+) GiB\)",
    "budget_gib": r"Desired GPU memory utilization is \([\d.]+, ([\d.]+) GiB\)",
    "peak_activation_gib": r"([-\d.]+) GiB for peak activation",
    "non_torch_gib": r"([-\d.]+) GiB for non-torch memory",
    "cudagraph_gib": r"([-\d.]+) GiB for CUDAGraph memory",
    "init_engine_s": r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+)",
    "max_num_batched_tokens": r"max_num_batched_tokens=(\d+)",
}
BACKENDS = {
    # "Using FLASH_ATTN attention backend out of ..." (chosen) or "Using AttentionBackendEnum.TRITON_ATTN backend." (forced)
    "attention_backend": r"Using (?:AttentionBackendEnum\.)?(\w+) (?:attention )?backend\b",
    "moe_backend": r"Using '(\S+)' Mxfp4 MoE backend",
}
# Start-up phases: the first log line matching each pattern (arrival time since launch).
PHASES = [
    ("first_log_line", r"."),
    ("args_parsed", r"non-default args"),
    ("model_config_resolved", r"Resolved architecture|resolved architecture"),
    ("engine_core_first_line", r"\(EngineCore"),
    ("engine_initializing", r"Initializing a V1 LLM engine"),
    ("dist_init", r"world_size=1 rank=0"),
    ("attention_backend_chosen", r"attention backend"),
    ("weights_loaded", r"Model loading took"),
    ("graph_memory_estimated", r"Estimated CUDA graph memory"),
    ("kv_cache_sized", r"GPU KV cache size"),
    ("graphs_captured", r"Graph capturing finished"),
    ("engine_init_done", r"init engine \(profile"),
    ("api_server_starting", r"Starting vLLM (?:API )?server|Available routes are"),
    ("app_startup_complete", r"Application startup complete"),
]
KEEP = re.compile(
    r"KV cache|Model loading|Graph captur|init engine|memory|CUDA graph|cudagraph|ERROR|backend|Mxfp4"
    r"|max_num_batched|Maximum concurrency|Free memory|non-default|spawn|fork|WARNING",
    re.I,
)


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()


def vllm_total_bytes() -> int:
    """What vLLM sees as the card's total (torch.cuda.mem_get_info()[1]), in a process that exits at once."""
    out = sh("python3 -c 'import torch; print(torch.cuda.mem_get_info()[1])'")
    return int(out.splitlines()[-1])


def gpu_used_mib() -> int:
    out = sh("nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits")
    return int(out.splitlines()[0]) if out else -1


def wait_gpu_free(limit_s: float = 30) -> float:
    t = time.monotonic()
    while time.monotonic() - t < limit_s and gpu_used_mib() > 1024:
        time.sleep(0.5)
    return round(time.monotonic() - t, 1)


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def fast_argv(port: int, util: float, extra: list[str]) -> list[str]:
    """Today's `fast` command (the product's engine command for a local GPU), dummy weights."""
    return [
        "vllm", "serve", MODEL,
        "--served-model-name", "llm",
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "bfloat16",
        "--max-model-len", "32768",
        "--max-num-seqs", "50",
        "--enable-auto-tool-choice", "--tool-call-parser", "openai", "--reasoning-parser", "openai_gptoss",
        "--enable-prefix-caching",
        "--tensor-parallel-size", "1",
        "--gpu-memory-utilization", str(util),
        "--compilation-config", FAST_CC,
        "--load-format", "dummy",
        *extra,
    ]  # fmt: skip


def cache_env(name: str) -> dict[str, str]:
    root = f"/root/vc/{name}"
    return {
        "VLLM_CACHE_ROOT": root,
        "TRITON_CACHE_DIR": f"{root}/triton",
        "TORCHINDUCTOR_CACHE_DIR": f"{root}/inductor",
    }


class Server:
    """`vllm serve` in its own process group; every output line timestamped on arrival."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, port: int):
        self.port, self.log = port, log
        self.lines: list[tuple[float, str]] = []
        self.child_seen: dict[int, float] = {}  # pid -> first seen (s since launch)
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.proc = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, bufsize=0,
        )  # fmt: skip
        self.pgid = self.proc.pid
        with open(
            os.environ.get("PGIDS", "/root/pgids.txt"), "a"
        ) as fh:  # the next call kills leftovers of a cut-off run by this id
            fh.write(f"{self.pgid}\n")
        self._fh = log.open("w")
        self._th = threading.Thread(target=self._read, daemon=True)
        self._th.start()

    def _read(self) -> None:
        for raw in iter(self.proc.stdout.readline, b""):
            t = time.monotonic() - self.t0
            for part in raw.decode(errors="replace").rstrip("\n").split("\r"):
                if part.strip():
                    self.lines.append((t, part))
                    self._fh.write(f"{t:9.3f}\t{part}\n")
        self._fh.flush()

    def wait_health(self, limit_s: float) -> float | None:
        import psutil

        leader = psutil.Process(self.proc.pid)
        url = f"http://127.0.0.1:{self.port}/health"
        end = self.t0 + limit_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return None
            try:
                for c in leader.children(recursive=True):
                    if c.pid not in self.child_seen:
                        self.child_seen[c.pid] = round(time.monotonic() - self.t0, 2)  # polled every 0.1 s
            except psutil.Error:
                pass
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return time.monotonic() - self.t0
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.1)
        return None

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def engine_pid(self) -> int | None:
        m = re.search(r"\(EngineCore(?:_DP0)? pid=(\d+)\)", self.text())
        return int(m.group(1)) if m else None

    def stop(self) -> None:
        """SIGTERM to the whole group, then SIGKILL; returns once no process of the group is left."""

        def group_alive() -> bool:
            try:
                os.killpg(self.pgid, 0)
                return True
            except ProcessLookupError:
                return False

        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            if not group_alive():
                break
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                break
            end = time.monotonic() + wait
            while time.monotonic() < end:
                self.proc.poll()  # reap the leader
                if not group_alive():
                    break
                time.sleep(0.2)
        self.proc.poll()
        self._th.join(timeout=5)
        self._fh.close()


def figures(text: str) -> dict:
    out: dict = {}
    for key, pattern in LOG_FIGURES.items():
        found = re.findall(pattern, text)
        if found:
            out[key] = float(found[-1].replace(",", ""))
    for key, pattern in BACKENDS.items():
        found = re.findall(pattern, text)
        if found:
            out[key] = sorted(set(found))
    return out


def phases(srv: Server) -> dict:
    out = {}
    for name, pattern in PHASES:
        rx = re.compile(pattern)
        for t, line in srv.lines:
            if rx.search(line):
                out[name] = round(t, 2)
                break
    return out


def bench(port: int, d: Path, name: str, *, concurrency: int, prompts: int, out_len: int, seed: int = 0):
    """`vllm bench serve`, random 1,024 in / out_len out, ignore-eos -> (result dict or None, Popen time)."""
    cmd = [
        "vllm", "bench", "serve", "--backend", "vllm", "--base-url", f"http://127.0.0.1:{port}",
        "--model", "llm", "--tokenizer", MODEL, "--dataset-name", "random",
        "--random-input-len", "1024", "--random-output-len", str(out_len), "--ignore-eos",
        "--max-concurrency", str(concurrency), "--num-prompts", str(prompts), "--seed", str(seed),
        "--save-result", "--result-dir", str(d), "--result-filename", f"{name}.json", "--disable-tqdm",
    ]  # fmt: skip
    return cmd


def run_bench(cmd: list[str], d: Path, name: str, env: dict) -> dict | None:
    with (d / f"{name}.out").open("w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **env}).returncode
    p = d / f"{name}.json"
    if rc or not p.exists():
        print(f"  bench {name} failed rc={rc}", flush=True)
        return None
    r = json.loads(p.read_text())
    keys = ("completed", "failed", "duration", "output_throughput", "mean_tpot_ms", "median_tpot_ms",
            "median_ttft_ms", "p99_ttft_ms", "median_itl_ms")  # fmt: skip
    return {k: r.get(k) for k in keys}


class Sampler(threading.Thread):
    """Every second: RSS and CPU (cores) of each process in the server's group; JSON lines."""

    def __init__(self, srv: Server, path: Path, engine_pid: int | None, bench_proc=None):
        super().__init__(daemon=True)
        self.srv, self.path, self.engine_pid, self.bench_proc = srv, path, engine_pid, bench_proc
        self.stop_evt = threading.Event()
        self.samples: list[dict] = []

    def run(self) -> None:
        import psutil

        leader = psutil.Process(self.srv.proc.pid)
        prev: dict[int, float] = {}
        prev_t = time.monotonic()
        k = 0
        with self.path.open("w") as fh:
            while not self.stop_evt.is_set():
                now = time.monotonic()
                dt = now - prev_t
                procs = [leader, *leader.children(recursive=True)]
                row = {"t": round(now - self.srv.t0, 2), "procs": {}}
                for p in procs:
                    try:
                        ct = p.cpu_times()
                        cpu = ct.user + ct.system
                        mi = p.memory_info()
                        role = (
                            "api_server" if p.pid == leader.pid
                            else "engine_core" if p.pid == self.engine_pid
                            else f"other:{p.name()}"
                        )  # fmt: skip
                        e = {"role": role, "rss_mib": round(mi.rss / 2**20, 1), "threads": p.num_threads()}
                        if p.pid in prev and dt > 0:
                            e["cores"] = round((cpu - prev[p.pid]) / dt, 3)
                        prev[p.pid] = cpu
                        if k % 5 == 0:
                            try:
                                fi = p.memory_full_info()
                                e["pss_mib"] = round(fi.pss / 2**20, 1)
                                e["uss_mib"] = round(fi.uss / 2**20, 1)
                            except (psutil.Error, AttributeError):
                                pass
                        row["procs"][str(p.pid)] = e
                    except psutil.Error:
                        continue
                if self.bench_proc is not None:
                    try:
                        bp = psutil.Process(self.bench_proc.pid)
                        ct = bp.cpu_times()
                        row["bench_client_cpu_s"] = round(ct.user + ct.system, 2)
                    except psutil.Error:
                        pass
                vm = psutil.virtual_memory()
                row["host_used_mib"] = round((vm.total - vm.available) / 2**20)
                row["rss_sum_mib"] = round(sum(e["rss_mib"] for e in row["procs"].values()), 1)
                row["cores_sum"] = round(sum(e.get("cores", 0) for e in row["procs"].values()), 3)
                self.samples.append(row)
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                prev_t = now
                k += 1
                self.stop_evt.wait(max(0.05, 1.0 - (time.monotonic() - now)))


def summarise_samples(samples: list[dict], t_from: float, t_to: float) -> dict:
    win = [s for s in samples if t_from <= s["t"] <= t_to]
    if not win:
        return {}
    out = {"n": len(win), "seconds": round(win[-1]["t"] - win[0]["t"], 1)}
    roles: dict[str, dict[str, list]] = {}
    for s in win:
        for e in s["procs"].values():
            r = roles.setdefault(e["role"], {"rss": [], "cores": [], "pss": []})
            r["rss"].append(e["rss_mib"])
            if "cores" in e:
                r["cores"].append(e["cores"])
            if "pss_mib" in e:
                r["pss"].append(e["pss_mib"])
    for role, r in roles.items():
        out[role] = {
            "peak_rss_mib": max(r["rss"]),
            "peak_pss_mib": max(r["pss"]) if r["pss"] else None,
            "mean_cores": round(sum(r["cores"]) / len(r["cores"]), 2) if r["cores"] else None,
            "peak_cores": max(r["cores"]) if r["cores"] else None,
        }
    out["group_peak_rss_sum_mib"] = max(s["rss_sum_mib"] for s in win)
    cs = [s["cores_sum"] for s in win[1:]]
    out["group_mean_cores"] = round(sum(cs) / len(cs), 2) if cs else None
    out["group_peak_cores"] = max(cs) if cs else None
    out["host_used_peak_mib"] = max(s["host_used_mib"] for s in win)
    return out


def write_result(d: Path, res: dict, srv: Server) -> None:
    text = srv.text()
    (d / "log_lines.txt").write_text("\n".join(ln for ln in text.split("\n") if KEEP.search(ln)))
    (d / "result.json").write_text(json.dumps(res, indent=1))


# ------------------------------------------------------------------------------------------- series 1
def series1(args) -> None:
    total = vllm_total_bytes()
    total_gib = total / GIB
    print(
        f"vLLM sees total {total} B = {total_gib:.3f} GiB; nvidia-smi: {sh('nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader')}",
        flush=True,
    )

    def util_for(card_gib: float) -> float:
        return round(0.9 * card_gib / total_gib, 5)

    runs = {
        "a": ("A10G", util_for(CARDS["A10G"]), [*MARLIN, "--max-num-batched-tokens", "2048"], "marlin"),
        "b": (
            "A100-40GB",
            util_for(CARDS["A100-40GB"]),
            [*MARLIN, "--max-num-batched-tokens", "2048"],
            "marlin",
        ),
        "c": ("H100", util_for(CARDS["H100"]), ["--max-num-batched-tokens", "8192"], "hopper"),
        "d": ("H200", 0.9, ["--max-num-batched-tokens", "8192"], "hopper"),
    }
    est = {"a": 110, "b": 90, "c": 120, "d": 200}
    for i, key in enumerate(args.runs):
        card, util, extra, cache = runs[key]
        if time.monotonic() + est[key] > args.deadline_at:
            print(f"skipped {key} ({card}): deadline", flush=True)
            continue
        d = args.out / f"s1_{key}_{card}"
        if (d / "result.json").exists():
            print(f"already done: {key} ({card})", flush=True)
            continue
        d.mkdir(parents=True, exist_ok=True)
        port = 8100 + i + (10 if key in "cd" else 0)
        assert port_free(port), port
        gpu_wait = wait_gpu_free()
        argv = fast_argv(port, util, extra)
        env = {**BASE_ENV, **cache_env(cache)}
        res = {
            "run": key, "card": card, "util": util, "vllm_total_bytes": total,
            "budget_gib_intended": round(0.9 * CARDS.get(card, total_gib), 3),
            "cache_root": cache, "cache_was_warm": Path(f"/root/vc/{cache}").exists(),
            "argv": argv, "env": env, "gpu_used_mib_before": gpu_used_mib(), "gpu_free_wait_s": gpu_wait,
        }  # fmt: skip
        print(f"=== {time.strftime('%T')} s1 {key} {card} util={util}: {' '.join(argv)}", flush=True)
        srv = Server(argv, env, d / "server.log", port)
        try:
            h = srv.wait_health(max(30, args.deadline_at - time.monotonic() - 15 - (70 if key == "d" else 0)))
            res["health_s"] = round(h, 1) if h else None
            res["gpu_used_mib_serving"] = gpu_used_mib()
            res["engine_pid"] = srv.engine_pid()
            if h and key == "d" and not args.no_load:
                left = args.deadline_at - time.monotonic() - 25
                prompts = 800 if left > 95 else max(150, int(800 * (left - 25) / 70))
                cmd = bench(port, d, "c50", concurrency=50, prompts=prompts, out_len=512)
                res["bench_cmd"] = " ".join(cmd)
                tb0 = time.monotonic() - srv.t0
                smp = Sampler(srv, d / "rss_cpu_samples.jsonl", res["engine_pid"])
                smp.start()
                time.sleep(3)  # idle baseline
                tb1 = time.monotonic() - srv.t0
                res["c50"] = run_bench(cmd, d, "c50", {})
                tb2 = time.monotonic() - srv.t0
                time.sleep(2)
                smp.stop_evt.set()
                smp.join(timeout=5)
                # bench's own start-up (imports, dataset) happens first; requests flow in the later part
                first_req = next(
                    (t for t, ln in srv.lines if t > tb1 and "Avg prompt throughput" in ln), None
                )
                res["sample_windows"] = {"idle": [tb0, tb1], "bench_process": [tb1, tb2]}
                res["rss_cpu_idle"] = summarise_samples(smp.samples, tb0, tb1)
                res["rss_cpu_bench"] = summarise_samples(smp.samples, tb1, tb2)
                # load proper: the samples where the engine core used more than half a core
                busy = [
                    s["t"]
                    for s in smp.samples
                    if any(
                        e["role"] == "engine_core" and e.get("cores", 0) > 0.5 for e in s["procs"].values()
                    )
                ]
                if busy:
                    res["rss_cpu_under_load"] = summarise_samples(smp.samples, busy[0], busy[-1])
                    res["rss_cpu_under_load_last40s"] = summarise_samples(
                        smp.samples, max(busy[0], busy[-1] - 40), busy[-1]
                    )
                res["first_stats_line_after_bench_s"] = first_req
                print(f"  c50: {res['c50']}\n  load: {json.dumps(res.get('rss_cpu_under_load'))}", flush=True)
        finally:
            srv.stop()
        res |= figures(srv.text())
        res["phases"] = phases(srv)
        res["backend_lines"] = [
            ln
            for _, ln in srv.lines
            if re.search(r"backend|Mxfp4", ln) and "non-default" not in ln and "Initializing a V1" not in ln
        ][:30]
        write_result(d, res, srv)
        keys = ("health_s", "weights_gib", "kv_cache_gib", "kv_tokens", "max_concurrency", "graph_pool_actual_gib",
                "peak_activation_gib", "non_torch_gib", "budget_gib", "attention_backend", "moe_backend", "max_num_batched_tokens")  # fmt: skip
        print(f"  {key}: " + json.dumps({k: res.get(k) for k in keys}), flush=True)


# ------------------------------------------------------------------------------------------- series 2
def series2(args) -> None:
    d0 = args.out / "s2"
    d0.mkdir(parents=True, exist_ok=True)
    prev = d0 / "summary.json"
    summary = json.loads(prev.read_text()) if prev.exists() else {"runs": []}
    done = len(summary["runs"])  # a second call goes on with the alternation where the first stopped
    # interpreter + imports alone, on this (warm) machine
    imp = {}
    for name, code in (
        ()
        if summary.get("import_s")
        else (("python", "pass"), ("torch", "import torch"), ("vllm_cli", "import vllm.entrypoints.cli.main"))
    ):
        t = time.monotonic()
        subprocess.run(["python3", "-c", code], env={**os.environ, **BASE_ENV}, capture_output=True)
        imp[name] = round(time.monotonic() - t, 2)
    summary.setdefault("import_s", []).append(imp)
    print(f"imports: {imp}", flush=True)
    arms = [("today", {}), ("mp0", {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})] * 3
    for i, (arm, extra_env) in enumerate(arms):
        if i < done:
            continue
        if time.monotonic() + 100 > args.deadline_at:
            print(f"skipped {arm}#{i // 2}: deadline", flush=True)
            continue
        d = d0 / f"{arm}_{i // 2}"
        d.mkdir(parents=True, exist_ok=True)
        port = 8200 + i
        assert port_free(port), port
        res = {"arm": arm, "repeat": i // 2, "order": i, "gpu_free_wait_s": wait_gpu_free()}
        argv = fast_argv(port, 0.9, [])
        env = {**BASE_ENV, **cache_env("hopper"), **extra_env}
        res |= {"argv": argv, "env": env, "cache_was_warm": Path("/root/vc/hopper").exists()}
        print(f"=== {time.strftime('%T')} s2 {arm} #{i // 2}", flush=True)
        t_before = time.monotonic()
        srv = Server(argv, env, d / "server.log", port)
        res["popen_s"] = round(srv.t0 - t_before, 4)  # wrapper's launch cost (Popen returns)
        try:
            h = srv.wait_health(max(30, args.deadline_at - time.monotonic() - 40))
            res["health_s"] = round(h, 2) if h else None
            res["engine_pid"] = srv.engine_pid()
            res["children_first_seen_s"] = srv.child_seen
            if h:
                cmd = bench(port, d, "c1", concurrency=1, prompts=20, out_len=256)
                res["bench_cmd"] = " ".join(cmd)
                res["c1"] = run_bench(cmd, d, "c1", {})
        finally:
            srv.stop()
        res["phases"] = phases(srv) | ({"health_200": res["health_s"]} if res.get("health_s") else {})
        res |= figures(srv.text())
        write_result(d, res, srv)
        summary["runs"].append(
            {
                k: res.get(k)
                for k in ("arm", "repeat", "health_s", "phases", "c1", "engine_pid", "children_first_seen_s")
            }
        )
        print(f"  {arm}: health {res.get('health_s')} phases {res['phases']} c1 {res.get('c1')}", flush=True)
        (d0 / "summary.json").write_text(json.dumps(summary, indent=1))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("series", choices=["series1", "series2"])
    ap.add_argument("--runs", nargs="*", default=["a", "b", "c", "d"])
    ap.add_argument("--out", type=Path, default=Path("/root/res"))
    ap.add_argument(
        "--deadline", type=float, default=540, help="seconds from now by which every server is gone"
    )
    ap.add_argument("--no-load", action="store_true")
    a = ap.parse_args()
    a.deadline_at = time.monotonic() + a.deadline
    a.out.mkdir(parents=True, exist_ok=True)
    (series1 if a.series == "series1" else series2)(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
