"""`modal run` refuses what its smoke test would refuse, before Modal builds anything; the original
gpt_oss_inference.py says what to install when only `pip install modal` was done.

Real `python -m modal ...` processes with no Modal token anywhere (HOME is an empty directory, MODAL_* is
unset). Without a token Modal stops right after importing the app ("Token missing"), before it builds an
image: so a run that ends with our one line and no "Token missing" was refused at import, before Modal
did anything at all. A missing package is simulated by `sys.modules[name] = None` in the interpreter
that runs Modal's CLI (the import then fails as if the package were not installed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("modal")

from gpt_oss_modal import install  # noqa: E402
from gpt_oss_modal.core.config import DeployConfig  # noqa: E402
from gpt_oss_modal.deploy import precheck  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ORIGINAL = "modal/gpt_oss_inference.py"
PROXY_TOKEN = {"MODAL_KEY": "wk-not-real", "MODAL_SECRET": "ws-not-real"}
# A generous bound for a hang, not a speed claim: a busy two-core machine imports Modal slowly.
SUBPROCESS_TIMEOUT = 300


def modal_cli(
    args: list[str], tmp_path: Path, env: dict[str, str] | None = None, *, block: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """`python -m modal ARGS` in the checkout, with no Modal token and no config; `block` hides packages."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GPT_OSS_", "MODAL_")) and k not in ("FAST_BOOT", "VLLM_API_KEY")
    }
    clean["HOME"] = str(tmp_path)  # no ~/.modal.toml
    hide = "".join(f"sys.modules[{name!r}] = None; " for name in block)
    code = f"import runpy, sys; {hide}sys.argv = ['modal', *sys.argv[1:]]; runpy.run_module('modal', run_name='__main__')"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def one_line(r: subprocess.CompletedProcess) -> str:
    """The single line a refusal prints: exit code 2, nothing else on stderr or stdout, no traceback."""
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Token missing" not in r.stdout + r.stderr  # refused before Modal did anything
    assert "Traceback" not in r.stdout + r.stderr
    return lines[0]


RUN_TARGETS = [[ORIGINAL], ["-m", "gpt_oss_modal.modal_app::main"]]
RUN_IDS = ["original-file", "module"]


# --- `modal run`: what the smoke test needs, checked at import ---------------------------------------------


@pytest.mark.parametrize("target", RUN_TARGETS, ids=RUN_IDS)
def test_modal_run_without_a_proxy_token_says_so_before_modal_builds(
    target: list[str], tmp_path: Path
) -> None:
    line = one_line(modal_cli(["run", *target], tmp_path))
    assert "MODAL_KEY" in line and "MODAL_SECRET" in line and "proxy-auth-tokens" in line


@pytest.mark.parametrize("half", ["MODAL_KEY", "MODAL_SECRET"])
def test_half_a_proxy_token_is_no_token(half: str, tmp_path: Path) -> None:
    line = one_line(modal_cli(["run", ORIGINAL], tmp_path, {half: PROXY_TOKEN[half]}))
    assert "proxy-auth-tokens" in line


def test_modal_run_with_an_api_key_secret_needs_the_key_here(tmp_path: Path) -> None:
    env = {**PROXY_TOKEN, "GPT_OSS_API_KEY_SECRET": "my-vllm-key"}
    line = one_line(modal_cli(["run", ORIGINAL], tmp_path, env))
    assert "'my-vllm-key'" in line and "VLLM_API_KEY" in line


@pytest.mark.parametrize("package", precheck.CLIENT_PACKAGES)
def test_modal_run_without_a_client_package_says_what_to_install(package: str, tmp_path: Path) -> None:
    line = one_line(modal_cli(["run", ORIGINAL], tmp_path, PROXY_TOKEN, block=(package,)))
    # httpx is imported by the app itself (its container module), so its absence is caught at import, as a
    # missing dependency of the package; openai only by the smoke test, so the pre-check names it.
    assert package in line and "pip install" in line and "[modal]" in line


def test_public_modal_run_needs_no_proxy_token(tmp_path: Path) -> None:
    # Nothing the smoke test needs is missing: Modal goes on and stops at its own token check.
    r = modal_cli(["run", ORIGINAL], tmp_path, {"GPT_OSS_PUBLIC": "1"})
    assert r.returncode != 0 and "Token missing" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.parametrize("target", RUN_TARGETS, ids=RUN_IDS)
def test_modal_run_with_everything_set_goes_on_to_modal(target: list[str], tmp_path: Path) -> None:
    env = {**PROXY_TOKEN, "GPT_OSS_API_KEY_SECRET": "my-vllm-key", "VLLM_API_KEY": "k"}
    r = modal_cli(["run", *target], tmp_path, env)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Token missing" in out and "error: " not in out, out


@pytest.mark.parametrize("command", ["deploy", "serve"])
def test_deploy_and_serve_need_no_smoke_test_credentials(command: str, tmp_path: Path) -> None:
    # Only `modal run` runs the smoke test: deploying a private endpoint needs no proxy token here.
    r = modal_cli([command, ORIGINAL], tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Token missing" in out and "MODAL_KEY" not in out, out


def test_modal_run_help_is_not_refused(tmp_path: Path) -> None:
    r = modal_cli(["run", ORIGINAL, "--help"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Usage:" in r.stdout


# --- a config the app refuses: one line under Modal's CLI too -----------------------------------------------


@pytest.mark.parametrize("command", ["deploy", "run"])
def test_a_bad_config_is_one_line_under_modal_cli(command: str, tmp_path: Path) -> None:
    line = one_line(modal_cli([command, ORIGINAL], tmp_path, {"GPT_OSS_MODEL": "tiny", **PROXY_TOKEN}))
    assert "local CPU engine only" in line


# --- only `pip install modal` done: the original entry point names the install command -------------------


def test_the_original_file_outside_a_checkout_without_the_package(tmp_path: Path) -> None:
    copy = tmp_path / "gpt_oss_inference.py"  # `cd modal; modal deploy gpt_oss_inference.py`, file alone
    shutil.copy(ROOT / ORIGINAL, copy)
    line = one_line(modal_cli(["deploy", str(copy)], tmp_path, block=("gpt_oss_modal",)))
    assert "no module named 'gpt_oss_modal'" in line
    assert line.endswith(": pip install 'gpt-oss-modal[modal]'")


def test_the_original_file_in_a_checkout_without_the_dependencies(tmp_path: Path) -> None:
    line = one_line(modal_cli(["deploy", ORIGINAL], tmp_path, block=("pydantic_settings",)))
    assert "no module named 'pydantic_settings'" in line
    assert line.endswith(f": pip install -e '.[modal]' in {ROOT}")


# --- the checks themselves ------------------------------------------------------------------------------


def test_run_problem_names_what_is_missing_in_order() -> None:
    private = DeployConfig(public=False, api_key_secret=None)
    assert "proxy-auth-tokens" in (precheck.run_problem(private, {}) or "")
    assert "proxy-auth-tokens" in (precheck.run_problem(private, {"MODAL_KEY": "wk-1"}) or "")
    assert precheck.run_problem(private, PROXY_TOKEN) is None
    keyed = DeployConfig(api_key_secret="my-vllm-key")
    assert "VLLM_API_KEY" in (precheck.run_problem(keyed, PROXY_TOKEN) or "")
    assert precheck.run_problem(keyed, {**PROXY_TOKEN, "VLLM_API_KEY": "k"}) is None
    assert precheck.run_problem(keyed, {**PROXY_TOKEN, "GPT_OSS_API_KEY": "k"}) is None
    assert precheck.run_problem(DeployConfig(public=True), {}) is None


def test_no_modal_cli_command_outside_modal_cli() -> None:
    # Here (a test: no Modal CLI running) the app module imports without any check of this machine.
    assert precheck.modal_cli_command() is None
    assert not precheck.under_modal_cli()


def test_install_hint_names_the_checkout_the_package_runs_from() -> None:
    if Path(install.__file__).resolve().is_relative_to(ROOT):
        assert install.install_hint("modal") == f"pip install -e '.[modal]' in {ROOT}"
    else:  # installed from a wheel
        assert install.install_hint("modal") == "pip install 'gpt-oss-modal[modal]'"


def test_the_install_hint_needs_only_the_standard_library() -> None:
    # gpt_oss_inference.py asks it when the package's dependencies may be missing: hide them all.
    hidden = ("pydantic", "pydantic_settings", "typer", "httpx", "openai", "rich", "modal")
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({hidden!r}))\n"
        "from gpt_oss_modal.install import install_hint; print(install_hint('bench'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == install.install_hint("bench")


# --- `doctor --remote`: what the probe reports, rendered here ---------------------------------------------


def test_a_remote_report_renders_with_its_checks() -> None:
    from gpt_oss_modal.deploy import doctor

    fact = {
        "python": "3.12.11", "cpus": 4,
        "gpu": {"name": "NVIDIA A10G", "driver": "570.133.20", "memory": "23028 MiB", "count": "1"},
        "torch": {"version": "2.11.0+cu130", "cuda": "13.0", "available": False, "capability": "8.6",
                  "device": "NVIDIA A10G"},
        "vllm": None, "attention_backend": None,
        "errors": {"vllm": "RuntimeError: CUDA driver too old", "attention_backend": "ImportError: no vllm"},
    }  # fmt: skip
    text = doctor.render_remote(fact, {"attention": "TRITON_ATTN", "moe": "marlin"})
    assert "NVIDIA A10G x1, 23028 MiB" in text and "2.11.0+cu130 (CUDA 13.0, SM 8.6)" in text
    assert "(planner: TRITON_ATTN)" in text and "(planner: marlin)" in text
    assert "vllm: RuntimeError: CUDA driver too old" in text
    failed = [c["check"] for c in doctor.remote_checks(fact) if not c["ok"]]
    assert failed == ["NVIDIA driver 570.133.20 >= 580 (CUDA 13)", "torch sees the GPU", "vLLM imports"]
    good = fact | {"gpu": fact["gpu"] | {"driver": "580.65.06"}, "torch": fact["torch"] | {"available": True},
                   "vllm": {"version": "0.26.0", "platform": "CudaPlatform"}}  # fmt: skip
    assert all(c["ok"] for c in doctor.remote_checks(good))


def test_the_probe_reports_what_it_cannot_learn_instead_of_failing() -> None:
    """Here (no GPU, no nvidia-smi) every question fails or answers, and the probe still returns a report."""
    from gpt_oss_modal.deploy import doctor

    fact = doctor.probe({"head_dim": 64, "num_attention_heads": 64})
    assert fact["cpus"] >= 1 and fact["python"]
    for key in ("gpu", "torch", "vllm", "attention_backend"):
        assert key in fact and (fact[key] is not None or key in fact["errors"])
