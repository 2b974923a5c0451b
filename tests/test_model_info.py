"""vLLM's model inspection cached ahead of the first engine (gpt_oss_modal.server.model_info), with the
real vLLM installed here (the CPU build) in the environment the Modal weights function gives it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpt_oss_modal.core import engine
from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.server import lifecycle, model_info

pytest.importorskip("vllm", reason="needs vLLM (pip install -e '.[local]')")


def modal_env(cache_root: Path) -> dict[str, str]:
    """The Modal functions' engine environment, its vLLM cache moved from the container's path to cache_root."""
    command = engine.build_command(DeployConfig(), target="modal")
    env = lifecycle.engine_env(command, {k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    return env | {"VLLM_CACHE_ROOT": str(cache_root)}


def test_the_answer_vllm_caches_is_the_one_its_api_server_then_reads(tmp_path: Path) -> None:
    env = modal_env(tmp_path / "vllm")
    logged: list[str] = []
    assert model_info.finish(model_info.start(env), logged.append)
    cached = tmp_path / "vllm" / "modelinfos" / "vllm-model_executor-models-gpt_oss-GptOssForCausalLM.json"
    assert logged == [f"vLLM's model info for GptOssForCausalLM cached: {cached}"]
    assert list(cached.parent.iterdir()) == [cached]
    # What the API server does at start-up, after: the registry answers from the cache, in no subprocess
    # of its own (and with an empty cache, in one).
    probe = (
        "import sys, vllm.model_executor.models.registry as registry\n"
        "runs = []\n"
        "in_subprocess = registry._run_in_subprocess\n"
        "registry._run_in_subprocess = lambda fn: runs.append(fn) or in_subprocess(fn)\n"
        "info = registry.ModelRegistry.models[sys.argv[1]].inspect_model_cls()\n"
        "print(len(runs), info.architecture, info.is_text_generation_model)\n"
    )
    for cache, expected in ((tmp_path / "vllm", "0"), (tmp_path / "empty", "1")):
        out = subprocess.run(
            [sys.executable, "-c", probe, model_info.ARCHITECTURE],
            env=env | {"VLLM_CACHE_ROOT": str(cache)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[-3:] == [expected, "GptOssForCausalLM", "True"]


def test_an_architecture_vllm_does_not_register_is_one_logged_line(tmp_path: Path) -> None:
    logged: list[str] = []
    proc = model_info.start(modal_env(tmp_path / "vllm"), architecture="NoSuchForCausalLM")
    assert not model_info.finish(proc, logged.append)
    assert len(logged) == 1, logged
    assert logged[0].startswith("vLLM's model inspection failed (exit code 1)")
    assert "no lazily imported NoSuchForCausalLM" in logged[0]
    assert logged[0].endswith("the first engine inspects it")
    assert not (tmp_path / "vllm" / "modelinfos").exists()
