"""`plan`, `config` and `gpus` as a user runs them: the installed console script, real exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXE = shutil.which("gpt-oss-modal") or ""


def run(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [EXE, *args] if EXE else [sys.executable, "-m", "gpt_oss_modal.cli", *args]
    base = {k: v for k, v in os.environ.items() if not k.startswith("GPT_OSS_") and k != "FAST_BOOT"}
    return subprocess.run(
        cmd, capture_output=True, text=True, cwd=cwd, env={**base, **(env or {})}, timeout=60
    )


def test_plan_120b_on_a10g_exits_2_with_one_line(tmp_path: Path) -> None:
    r = run("plan", "--model", "120b", "--gpu", "A10G", cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "GiB" in lines[0] and "A100-80GB" in lines[0]
    assert r.stdout == ""


def test_plan_20b_on_h100_json(tmp_path: Path) -> None:
    r = run("plan", "--model", "20b", "--gpu", "H100", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert p["fits"] is True
    assert p["max_context"] == 131072 and p["max_model_len"] == 131072
    assert p["moe_kernel"] == "triton"
    assert p["usd_per_hour"] > 0 and p["price_date"]
    assert p["tensor_parallel"] == 1


def test_plan_table_mentions_reduced_context_on_l4(tmp_path: Path) -> None:
    r = run("plan", "-m", "20b", "-g", "L4", cwd=tmp_path)
    assert r.returncode == 0
    assert "context reduced" in r.stdout and "marlin" in r.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "--gpu", "T4"],
        ["plan", "--gpu", "H100:3"],
        ["plan", "--max-inputs", "-5"],
        ["config", "--dtype", "float16"],
        ["config", "--scaledown-window", "99999"],
        ["plan", "--model", "gpt-5"],
    ],
)
def test_bad_flags_exit_2_with_one_line(args: list[str], tmp_path: Path) -> None:
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr


def test_config_shows_where_values_came_from(tmp_path: Path) -> None:
    (tmp_path / "gpt-oss-modal.toml").write_text('gpu = "H200"\nmax_inputs = 8\n')
    r = run("config", "--json", "--max-inputs", "4", cwd=tmp_path, env={"GPT_OSS_BOOT": "fast"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["config"]["gpu"] == "H200" and out["sources"]["gpu"].startswith("file ")
    assert out["config"]["max_inputs"] == 4 and out["sources"]["max_inputs"] == "cli"
    assert out["config"]["boot"] == "fast" and out["sources"]["boot"] == "env"


def test_config_command_prints_the_engine_argv(tmp_path: Path) -> None:
    r = run("config", "--json", "--command", "--gpu", "H100:2", cwd=tmp_path)
    argv = json.loads(r.stdout)["command"]["argv"]
    assert argv[:3] == ["vllm", "serve", "openai/gpt-oss-20b"]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"


def test_config_never_shows_the_api_key(tmp_path: Path) -> None:
    r = run("config", cwd=tmp_path, env={"GPT_OSS_API_KEY": "sk-top-secret-123"})
    assert r.returncode == 0
    assert "sk-top-secret-123" not in r.stdout + r.stderr
    assert "***" in r.stdout


def test_gpus_json_lists_the_catalog(tmp_path: Path) -> None:
    r = run("gpus", "--json", cwd=tmp_path)
    names = [g["gpu"] for g in json.loads(r.stdout)["gpus"]]
    assert {"L4", "A10G", "A100-40GB", "A100-80GB", "H100", "H200", "B200"} <= set(names)
