"""The MoE routing kernels compiled ahead of the first requests (gpt_oss_modal.server.precompile): which deployments
get it, what it compiles, and the container step around it (skip on a marker, bounded, never fatal)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpt_oss_modal.core import engine
from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.core.planner import plan
from gpt_oss_modal.server import lifecycle, precompile


@pytest.mark.parametrize(
    ("model", "gpu", "expected"),
    [
        ("20b", "H100", (32, 4, 8192, 90)),
        ("20b", "H200", (32, 4, 8192, 90)),
        ("120b", "H100", (128, 4, 8192, 90)),
        ("120b", "H100:2", (128, 4, 8192, 90)),  # every rank routes over all experts: one set of kernels
        ("20b", "A10G", None),  # Marlin: compiled ahead of time
        ("20b", "L40S", None),
        ("20b", "A100-80GB", None),
        ("120b", "B200", None),  # FlashInfer's kernels
    ],
)
def test_only_hopper_compiles_the_routing_kernels(model: str, gpu: str, expected) -> None:
    routing = precompile.routing_for(DeployConfig(model=model, gpu=gpu))
    got = None if routing is None else (routing.experts, routing.top_k, routing.max_tokens, routing.sm)
    assert got == expected


def test_the_tiny_checkpoint_compiles_nothing() -> None:
    assert precompile.routing_for(DeployConfig(model="tiny", gpu="H100")) is None


@pytest.mark.parametrize(
    "spelling", [["--max-num-batched-tokens", "4096"], ["--max-num-batched-tokens=4096"]]
)
def test_the_users_batch_size_bounds_the_variants(spelling: list[str]) -> None:
    cfg = DeployConfig(model="20b", gpu="H100", extra_vllm_args=spelling)
    assert precompile.routing_for(cfg).max_tokens == 4096
    assert precompile.routing_for(cfg).args() == ["--experts", "32", "--top-k", "4", "--max-tokens", "4096"]


def test_every_bucket_gets_both_specializations() -> None:
    counts = precompile.token_counts(8192)
    # 1 token, then each 32-token bucket's top (divisible by 16) and the count below it (not divisible).
    assert counts[:5] == [1, 31, 32, 63, 64] and counts[-2:] == [8191, 8192]
    assert len(counts) == 1 + 2 * (8192 // precompile.BUCKET)
    assert {-(-n // precompile.BUCKET) for n in counts} == set(range(1, 8192 // precompile.BUCKET + 1))


def test_the_marker_names_vllm_the_gpu_family_and_the_shapes(tmp_path: Path) -> None:
    routing = precompile.routing_for(DeployConfig(model="120b", gpu="H200"))
    marker = routing.marker(tmp_path)
    assert marker.parent == tmp_path / "gpt-oss-modal-routing"
    assert marker.name.startswith("vllm-") and marker.name.endswith("-sm90-e128-k4-t8192.done")
    # The engine's cache: the volume's in a Modal container, Triton's default elsewhere.
    assert precompile.triton_cache_dir(engine.COMPILE_CACHE_ENV) == Path(
        engine.COMPILE_CACHE_ENV["TRITON_CACHE_DIR"]
    )
    assert precompile.triton_cache_dir({"HOME": "/x"}).parts[-2:] == (".triton", "cache")


def _step(tmp_path: Path, cfg: DeployConfig, budget: float) -> tuple[bool, list[str]]:
    # The local GPU target leaves Triton's cache to the environment (Modal's pins it on the cache volume).
    lines: list[str] = []
    command = engine.build_command(cfg, target="local-gpu")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TRITON_CACHE_DIR": str(tmp_path / "triton")}
    done = lifecycle.precompile_kernels(cfg, command, budget, base_env=env, log=lines.append)
    return done, lines


def test_the_step_skips_what_the_cache_already_holds(tmp_path: Path) -> None:
    cfg = DeployConfig(model="20b", gpu="H100")
    marker = precompile.routing_for(cfg).marker(tmp_path / "triton")
    marker.parent.mkdir(parents=True)
    marker.write_text("done\n")
    done, lines = _step(tmp_path, cfg, 60)
    assert done and lines == [f"MoE routing kernels already compiled ({marker})"]


def test_the_step_runs_the_real_module_and_goes_on_without_a_gpu(tmp_path: Path) -> None:
    # This machine has no CUDA GPU: the real `python -m gpt_oss_modal.server.precompile` says so and exits 0, and
    # no marker is left (a GPU container would still compile everything).
    cfg = DeployConfig(model="20b", gpu="H100")
    done, lines = _step(tmp_path, cfg, 120)
    assert not done and len(lines) == 1 and "nothing to compile (no CUDA GPU)" in lines[0], lines
    assert not (tmp_path / "triton" / "gpt-oss-modal-routing").exists()


def test_the_step_is_bounded_and_never_fatal(tmp_path: Path) -> None:
    done, lines = _step(tmp_path, DeployConfig(model="20b", gpu="H100"), 0.05)
    assert not done and len(lines) == 1 and "were spent" in lines[0] and "next start" in lines[0], lines


def test_deployments_that_compile_nothing_skip_the_step(tmp_path: Path) -> None:
    done, lines = _step(tmp_path, DeployConfig(model="20b", gpu="A10G"), 120)
    assert not done and lines == []


@pytest.mark.parametrize("snapshot", [False, True])
def test_the_precompile_share_comes_out_of_the_time_to_health(snapshot: bool) -> None:
    without = lifecycle.startup_budget(600, snapshot=snapshot)
    with_it = lifecycle.startup_budget(600, snapshot=snapshot, precompile=True)
    assert without.precompile == 0 and with_it.precompile == 120  # 20% of the timeout, at most 180 s
    assert with_it.ready == without.ready - 120 and with_it.total == without.total
    assert (
        lifecycle.startup_budget(3600, snapshot=snapshot, precompile=True).precompile
        == lifecycle.PRECOMPILE_MAX_S
    )


def test_plan_says_when_the_first_container_precompiles() -> None:
    h100 = plan(DeployConfig(model="20b", gpu="H100"))
    assert any("precompiles 513 MoE routing kernel variants" in n for n in h100.notes), h100.notes
    a10g = plan(DeployConfig(model="20b", gpu="A10G"))
    assert not any("precompiles" in n for n in a10g.notes)
