"""The MoE kernels primed ahead of the first requests (gpt_oss_modal.server.precompile): which
deployments get it, what it compiles, how many workers it takes, the marker, and the module run for real
on this machine (which has no CUDA GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gpt_oss_modal import files
from gpt_oss_modal.core import engine, planner
from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.core.planner import plan
from gpt_oss_modal.server import precompile


@pytest.mark.parametrize(
    ("model", "gpu", "expected"),
    [
        ("20b", "H100", (32, 4, 2880, 2880, 8192, 90)),
        ("20b", "H200", (32, 4, 2880, 2880, 8192, 90)),
        ("120b", "H100", (128, 4, 2880, 2880, 8192, 90)),
        # Every rank routes over all experts, each holding half of every expert's intermediate size.
        ("120b", "H100:2", (128, 4, 2880, 1440, 8192, 90)),
        ("20b", "A10G", None),  # Marlin: compiled ahead of time
        ("20b", "L40S", None),
        ("20b", "A100-80GB", None),
        ("120b", "B200", None),  # FlashInfer's kernels
    ],
)
def test_only_hopper_compiles_the_moe_kernels(model: str, gpu: str, expected) -> None:
    k = precompile.moe_kernels_for(DeployConfig(model=model, gpu=gpu))
    got = None if k is None else (k.experts, k.top_k, k.hidden, k.intermediate, k.max_tokens, k.sm)
    assert got == expected


def test_the_tiny_checkpoint_compiles_nothing() -> None:
    assert precompile.moe_kernels_for(DeployConfig(model="tiny", gpu="H100")) is None


@pytest.mark.parametrize(
    "extra", [[], ["--max-num-batched-tokens", "4096"], ["--max-num-batched-tokens=1024"]]
)
@pytest.mark.parametrize("gpu", ["H100", "H200", "H100:2"])
def test_planner_priming_and_engine_agree_on_the_step(gpu: str, extra: list[str]) -> None:
    # One value: the plan's, which the engine command passes and the priming's range ends at.
    cfg = DeployConfig(model="20b", gpu=gpu, extra_vllm_args=extra)
    p = plan(cfg)
    routing = precompile.moe_kernels_for(cfg, p)
    assert routing.max_tokens == p.max_num_batched_tokens == engine.build_command(cfg).max_num_batched_tokens
    assert routing.args() == [
        "--experts",
        "32",
        "--top-k",
        "4",
        "--hidden",
        "2880",
        "--intermediate",
        "2880" if gpu != "H100:2" else "1440",
        "--max-tokens",
        str(p.max_num_batched_tokens),
    ]
    # The plan's note counts the step sizes the module runs.
    steps = len(planner.moe_token_counts(routing.max_tokens, routing.experts, routing.top_k))
    assert any(f"the MoE kernels of {steps} step sizes" in n for n in p.notes), p.notes


def test_plan_notes_the_priming_only_where_it_happens() -> None:
    h100 = plan(DeployConfig(model="20b", gpu="H100"))
    assert any(
        "the MoE kernels of 653 step sizes" in n and "before the first container" in n for n in h100.notes
    )
    a10g = plan(DeployConfig(model="20b", gpu="A10G"))
    assert not any("MoE kernels" in n for n in a10g.notes)


def test_every_bucket_gets_both_specializations() -> None:
    counts = planner.routing_token_counts(8192)
    # 1 token, then each 32-token bucket's top (divisible by 16) and the count below it (not divisible).
    assert counts[:5] == [1, 31, 32, 63, 64] and counts[-2:] == [8191, 8192]
    assert len(counts) == 1 + 2 * (8192 // planner.ROUTING_BUCKET)
    assert {-(-n // planner.ROUTING_BUCKET) for n in counts} == set(
        range(1, 8192 // planner.ROUTING_BUCKET + 1)
    )


@pytest.mark.parametrize(("experts", "max_tokens"), [(32, 8192), (128, 8192), (32, 1024), (32, 100)])
def test_the_step_sizes_meet_every_routing_and_matmul_variant(experts: int, max_tokens: int) -> None:
    counts = planner.moe_token_counts(max_tokens, experts, 4)
    assert set(planner.routing_token_counts(max_tokens)) <= set(counts) and max(counts) <= max_tokens

    def variant(n: int) -> tuple:
        # What fixes a matmul variant: the row-block range, and how Triton specializes the step's tokens,
        # its routed rows and the row blocks at every block size (1, a multiple of 16, or neither).
        spec = lambda v: 1 if v == 1 else 16 if v % 16 == 0 else 0  # noqa: E731
        rows = 4 * n
        blocks = [
            rows if rows <= experts else -(-(rows - experts + 1) // b) + experts - 1
            for b in (16, 32, 64, 128)
        ]
        return (n.bit_length(), spec(n), spec(rows), *map(spec, blocks))

    every = {variant(n) for n in range(1, max_tokens + 1)}
    assert {variant(n) for n in counts} == every
    # Far fewer than one run per step size: each variant once, beside the routing's two per bucket.
    assert len(counts) < len(planner.routing_token_counts(max_tokens)) + len(every)


def test_the_marker_names_vllm_the_gpu_family_and_the_shapes(tmp_path: Path) -> None:
    routing = precompile.moe_kernels_for(DeployConfig(model="120b", gpu="H200", vllm_version="0.26.0"))
    marker = routing.marker(tmp_path)
    assert marker == tmp_path / "gpt-oss-modal-moe" / "vllm-0.26.0-sm90-e128-k4-h2880-i2880-t8192.done"
    local = precompile.moe_kernels_for(DeployConfig(model="120b", gpu="H200"), vllm="0.32.1")
    assert local.marker(tmp_path).name.startswith("vllm-0.32.1-")
    # The engine's cache: the volume's in a Modal container, Triton's default elsewhere.
    assert precompile.triton_cache_dir(engine.COMPILE_CACHE_ENV) == Path(
        engine.COMPILE_CACHE_ENV["TRITON_CACHE_DIR"]
    )
    assert precompile.triton_cache_dir({"HOME": "/x"}).parts[-2:] == (".triton", "cache")


# --- workers from what was granted ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("affinity", "quota", "cpus"),
    [(64, None, 64), (64, 4.0, 4), (64, 2.5, 3), (2, 16.0, 2), (8, 0.125, 1)],
)
def test_cpus_granted_are_the_affinity_capped_by_the_quota(affinity: int, quota, cpus: int) -> None:
    assert precompile.granted_cpus(affinity, quota) == cpus


@pytest.mark.parametrize(
    ("cpus", "free_gib", "workers"),
    [(64, 139.0, 8), (3, 139.0, 3), (64, 3.5, 2), (1, 139.0, 1), (16, 1.0, 0)],
)
def test_workers_follow_cpus_and_free_gpu_memory(cpus: int, free_gib: float, workers: int) -> None:
    assert precompile.worker_count(cpus, free_gib) == workers


def test_a_worker_holds_more_for_more_experts() -> None:
    # One layer's MXFP4 experts: 0.4 GiB for 20b's 32, four times that for 120b's 128.
    assert precompile.worker_gib(32) == precompile.WORKER_GIB
    assert precompile.worker_gib(128) == pytest.approx(precompile.WORKER_GIB + 1.2)
    assert precompile.worker_count(16, 8.0, per_worker=precompile.worker_gib(128)) == 2


def test_the_cgroup_quota_is_read_from_v2_and_v1(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("250000 100000\n")
    assert precompile.cgroup_cpu_quota(v2) == 2.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert precompile.cgroup_cpu_quota(v2) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("400000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert precompile.cgroup_cpu_quota(tmp_path / "v1") == 4.0
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert precompile.cgroup_cpu_quota(tmp_path / "v1") is None
    assert precompile.cgroup_cpu_quota(tmp_path / "none") is None


# --- the marker ---------------------------------------------------------------------------------------


def test_the_marker_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    marker = tmp_path / "cache" / "gpt-oss-modal-moe" / "m.done"
    files.write_atomically(marker, "513 variants\n")
    assert marker.read_text() == "513 variants\n"
    assert os.listdir(marker.parent) == ["m.done"]  # no temporary file left beside it
    # A reader racing many writers sees one whole text or another, never a half-written file.
    texts = {f"{i} " * 50_000 + "\n" for i in range(8)}
    seen: set[str] = set()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.add(marker.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(5):
        for text in texts:
            files.write_atomically(marker, text)
    done.set()
    reader.join()
    assert seen <= texts | {"513 variants\n"}
    assert os.listdir(marker.parent) == ["m.done"]


# --- the module, run for real ----------------------------------------------------------------------------


def test_the_module_without_a_gpu_compiles_nothing_and_leaves_no_marker(tmp_path: Path) -> None:
    # This machine has no CUDA GPU: `python -m gpt_oss_modal.server.precompile` (what deploy's GPU function
    # runs) says so and exits 0, and no marker is left (a GPU would still compile everything).
    marker = tmp_path / "m.done"
    args = precompile.moe_kernels_for(DeployConfig(model="20b", gpu="H100")).args()
    out = subprocess.run(
        [sys.executable, "-m", "gpt_oss_modal.server.precompile", *args, "--marker", str(marker)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "precompile: nothing to compile (no CUDA GPU)"
    assert not marker.exists()


def _prime(tmp_path: Path, **kw) -> tuple[bool, list[str]]:
    lines: list[str] = []
    routing = precompile.moe_kernels_for(DeployConfig(model="20b", gpu="H100"))
    env = {**os.environ, "HOME": str(tmp_path), "TRITON_CACHE_DIR": str(tmp_path / "triton")}
    return precompile.prime(routing, env, lines.append, **kw), lines


def test_prime_skips_what_the_cache_already_holds(tmp_path: Path) -> None:
    marker = precompile.moe_kernels_for(DeployConfig(model="20b", gpu="H100")).marker(tmp_path / "triton")
    files.write_atomically(marker, "done\n")
    done, lines = _prime(tmp_path)
    assert done and lines == [f"MoE kernels already in the cache ({marker})"]


def test_prime_runs_the_module_in_the_engines_environment(tmp_path: Path) -> None:
    done, lines = _prime(tmp_path)
    assert not done and lines == ["precompile: nothing to compile (no CUDA GPU)"]
    assert not (tmp_path / "triton" / "gpt-oss-modal-moe").exists()


def test_prime_is_bounded_and_never_fatal(tmp_path: Path) -> None:
    done, lines = _prime(tmp_path, timeout=0.05)
    assert not done and len(lines) == 1 and "stopped after" in lines[0] and "first use" in lines[0], lines
