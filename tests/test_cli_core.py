"""`plan`, `config`, `gpus` and the config flags of every command as a user runs them: the installed console
script (the `cli` fixture), real exit codes, stdout captured (not a terminal)."""

from __future__ import annotations

import json

import pytest

from gpt_oss_modal.core.config import DeployConfig, applies


def test_plan_120b_on_a10g_exits_2_with_one_line(cli) -> None:
    r = cli("plan", "--model", "120b", "--gpu", "A10G")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "GiB" in lines[0] and "A100-80GB" in lines[0]
    assert r.stdout == ""


def test_with_no_file_and_no_environment_the_defaults_are_the_originals(cli) -> None:
    r = cli("config", "--json")
    assert r.returncode == 0, r.stderr
    config = json.loads(r.stdout)["config"]
    assert (config["gpu"], config["scaledown_window"], config["max_inputs"], config["max_model_len"]) == (
        "A10G",
        300,
        50,
        32768,
    )
    assert (config["min_containers"], config["max_containers"], config["buffer_containers"]) == (0, 2, 0)
    assert config["target_inputs"] is None
    r = cli("plan", "--json")  # plans exactly that
    p = json.loads(r.stdout)
    assert r.returncode == 0 and p["fits"] is True, r.stderr
    assert (p["model"], p["gpu"], p["max_model_len"], p["max_inputs"]) == (
        "openai/gpt-oss-20b",
        "A10G",
        32768,
        50,
    )
    assert p["always_on_usd_per_day"] == 0 and p["max_usd_per_hour"] == round(2 * p["usd_per_hour"], 2)


def test_plan_shows_the_always_on_cost_and_the_ceiling(cli) -> None:
    r = cli("plan", "-g", "H100", "--min-containers", "1", "--max-containers", "3", "--target-inputs", "40")
    assert r.returncode == 0, r.stderr
    price = json.loads(cli("gpus", "--json").stdout)["gpus"]
    h100 = next(g["usd_per_hour"] for g in price if g["gpu"] == "H100")
    # A running container costs its GPU and the cores and memory it reserves (20b: 4 cores, 8 GiB).
    running = json.loads(cli("plan", "-g", "H100", "--json").stdout)["usd_per_hour"]
    assert running > h100
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in r.stdout.splitlines()
        if "│" in line
    }
    assert rows["cost"].startswith(f"${running:.2f}/hour while a container runs: H100 ${h100:.2f} + 4 cores")
    assert rows["always on"].startswith(f"${running * 24:,.2f}/day: min_containers 1")
    assert rows["ceiling"].startswith(f"${3 * running:,.2f}/hour at most: max_containers 3")
    assert rows["scaling"].startswith("1 to 3 containers, scaling out at 40 requests per container")
    assert cli("plan").stdout.count("$0.00/day: scales to zero when idle") == 1


def test_plan_20b_on_h100_json(cli) -> None:
    r = cli("plan", "--model", "20b", "--gpu", "H100", "--json", "--max-model-len", "auto")
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert p["fits"] is True
    assert p["max_context"] == 131072 and p["max_model_len"] == 131072 and p["max_model_len_source"] == "auto"
    assert p["moe_kernel"] == "triton"
    assert p["usd_per_hour"] > 0 and p["price_date"]
    assert p["tensor_parallel"] == 1


def test_a_context_that_does_not_fit_is_one_line_with_the_largest_that_does(cli) -> None:
    args = ["-m", "120b", "-g", "A100-80GB", "--max-model-len", "131072", "--gpu-memory-utilization", "0.85"]
    for command in ("plan", "deploy"):  # deploy refuses it before it looks for Modal credentials
        r = cli(command, *args)
        assert r.returncode == 2, r.stderr
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith("error: max_model_len 131072 does not fit openai/gpt-oss-120b on A100-80GB: ")
        largest = int(line.split("the largest that fits is ")[1].split(":")[0])
        assert cli("plan", *args[:-4], "--max-model-len", str(largest), *args[-2:]).returncode == 0


def test_plan_20b_on_a10g_shows_marlins_weights_and_the_engines_step(cli) -> None:
    r = cli("plan", "--model", "20b", "--gpu", "A10G")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())  # the table wraps long cells
    assert "13.8 weights" in text and "A10G budget emulated on an H200" in text
    assert "--max-num-batched-tokens 2048" in text


def test_plan_table_mentions_reduced_context_on_l4(cli) -> None:
    r = cli("plan", "-m", "20b", "-g", "L4", "--max-model-len", "auto")
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
        ["plan", "--min-containers", "3"],
        ["plan", "--max-containers", "0"],
        ["plan", "--buffer-containers", "5", "--max-containers", "4"],
        ["plan", "--target-inputs", "51"],
        ["plan", "--target-inputs", "0"],
        ["config", "--max-model-len", "lots"],
    ],
)
def test_bad_flags_exit_2_with_one_line(args: list[str], cli) -> None:
    r = cli(*args)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr


def test_config_shows_where_values_came_from(cli) -> None:
    (cli.home / "gpt-oss-modal.toml").write_text('gpu = "H200"\nmax_inputs = 8\n')
    r = cli("config", "--json", "--max-inputs", "4", env={"GPT_OSS_BOOT": "fast"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["config"]["gpu"] == "H200" and out["sources"]["gpu"].startswith("file ")
    assert out["config"]["max_inputs"] == 4 and out["sources"]["max_inputs"] == "cli"
    assert out["config"]["boot"] == "fast" and out["sources"]["boot"] == "env GPT_OSS_BOOT"


def test_config_names_the_originals_variables(cli) -> None:
    env = {"GPU_CONFIG": "H100", "MAX_INPUTS": "8", "GPT_OSS_MAX_INPUTS": "16", "SCALEDOWN_WINDOW": "60"}
    r = cli("config", "--json", env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["config"]["gpu"], out["sources"]["gpu"]) == ("H100", "env GPU_CONFIG")
    assert (out["config"]["max_inputs"], out["sources"]["max_inputs"]) == (16, "env GPT_OSS_MAX_INPUTS")
    assert (out["config"]["scaledown_window"], out["sources"]["scaledown_window"]) == (
        60,
        "env SCALEDOWN_WINDOW",
    )
    row = next(line for line in cli("config", env=env).stdout.splitlines() if " gpu " in line)
    assert "env GPU_CONFIG" in row


@pytest.mark.parametrize("command", ["config", "plan", "deploy"])
def test_use_float16_true_is_refused_in_one_line(command: str, cli) -> None:
    r = cli(command, env={"USE_FLOAT16": "True"})
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: USE_FLOAT16=True: GPT-OSS runs in bfloat16 only") and "MXFP4" in line
    if command == "config":  # False asks for what runs anyway
        out = json.loads(cli(command, "--json", env={"USE_FLOAT16": "False"}).stdout)
        assert (out["config"]["dtype"], out["sources"]["dtype"]) == ("bfloat16", "env USE_FLOAT16")


def test_config_command_prints_the_engine_argv(cli) -> None:
    r = cli("config", "--json", "--command", "--gpu", "H100:2")
    argv = json.loads(r.stdout)["command"]["argv"]
    assert argv[:3] == ["vllm", "serve", "openai/gpt-oss-20b"]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"


def test_config_never_shows_the_api_key(cli) -> None:
    r = cli("config", env={"GPT_OSS_API_KEY": "sk-top-secret-123"})
    assert r.returncode == 0
    assert "sk-top-secret-123" not in r.stdout + r.stderr
    assert "***" in r.stdout


def test_gpus_json_lists_the_catalog(cli) -> None:
    r = cli("gpus", "--json")
    names = [g["gpu"] for g in json.loads(r.stdout)["gpus"]]
    assert {"L4", "A10G", "A100-40GB", "A100-80GB", "H100", "H200", "B200"} <= set(names)


# --- one flag per setting, on every command that takes config ---------------------------------------------

CONFIG_COMMANDS = {"plan": "modal", "config": "any", "deploy": "modal", "run": "modal", "serve": "local"}


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_every_setting_is_a_flag_with_its_description_as_help(command: str, cli) -> None:
    r = cli(command, "--help")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    where = CONFIG_COMMANDS[command]
    for name, field in DeployConfig.model_fields.items():
        line = next((ln for ln in lines if f" {flag_of(name)} " in ln or f" {flag_of(name)}/" in ln), None)
        if where == "any" or applies(name, where):
            assert line is not None, f"{command} has no {flag_of(name)}"
            # Not a terminal: the whole description on the flag's own line, nothing wrapped.
            assert line.rstrip().endswith(field.description.rstrip()), line
        else:
            assert line is None, f"{command} offers {flag_of(name)}, which has no effect there"


def test_flags_that_deploy_and_run_lacked_reach_the_config(cli) -> None:
    r = cli(
        "config", "--json", "--snapshot", "--timeout", "120", "--startup-timeout", "600", "--no-proxy-auth",
        "--api-key-secret", "my-key", "--extra-vllm-args", "--seed 7", "--port", "9000",
        "--no-prefix-caching", "-m", "120b", "-g", "H100",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    config, sources = out["config"], out["sources"]
    assert config["snapshot"] is True and config["timeout"] == 120 and config["startup_timeout"] == 600
    assert config["proxy_auth"] is False and config["api_key_secret"] == "my-key"
    assert config["extra_vllm_args"] == ["--seed", "7"] and config["port"] == 9000
    assert config["prefix_caching"] is False
    assert config["model"] == "openai/gpt-oss-120b" and config["gpu"] == "H100"  # snapshots take one GPU
    assert {sources[n] for n in ("snapshot", "timeout", "proxy_auth", "extra_vllm_args", "port")} == {"cli"}


@pytest.mark.parametrize(
    ("flags", "boot"),
    [
        (["--fast-boot"], "fast"),
        (["--no-fast-boot"], "compiled"),
        (["--boot", "fast"], "fast"),
        ([], DeployConfig.model_fields["boot"].default),
    ],
)
def test_fast_boot_flag_is_the_originals_switch(flags: list[str], boot: str, cli) -> None:
    r = cli("config", "--json", *flags)
    assert json.loads(r.stdout)["config"]["boot"] == boot


def test_a_fast_boot_flag_overrides_the_environment(cli) -> None:
    r = cli("config", "--json", "--no-fast-boot", env={"FAST_BOOT": "1"})
    out = json.loads(r.stdout)
    assert out["config"]["boot"] == "compiled" and out["sources"]["boot"] == "cli"


def test_an_api_key_flag_is_never_echoed(cli) -> None:
    r = cli("config", "--api-key", "sk-flag-secret-456")
    assert r.returncode == 0, r.stderr
    assert "sk-flag-secret-456" not in r.stdout + r.stderr and "***" in r.stdout
    r = cli("config", "--json", "--api-key", "sk-flag-secret-456")
    assert "sk-flag-secret-456" not in r.stdout and json.loads(r.stdout)["config"]["api_key"] == "***"


def test_a_flag_error_is_one_line_and_exit_2(cli) -> None:
    for args in (["config", "--max-inputs", "1.5"], ["deploy", "--boot", "warp"], ["plan", "--no-such"]):
        r = cli(*args)
        assert r.returncode == 2, args
        assert len(r.stderr.strip().splitlines()) == 1 and "--help" in r.stderr, r.stderr


def test_a_key_on_the_engine_command_line_is_refused_before_anything_starts(cli) -> None:
    secret = "sk-argv-secret-1234"
    r = cli(
        "serve",
        "--local",
        "--model",
        "tiny",
        env={"GPT_OSS_EXTRA_VLLM_ARGS": json.dumps(["--api-key", secret])},
    )
    assert r.returncode == 2
    assert "--api-key does not belong on the command line" in r.stderr and secret not in r.stdout + r.stderr


# --- output into a pipe -----------------------------------------------------------------------------------


def test_tables_into_a_pipe_keep_their_natural_width(cli) -> None:
    r = cli("plan", "-m", "120b", "-g", "H100", "--max-model-len", "auto")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) > 80  # not cut to 80 columns
    cost = next(line for line in lines if line.lstrip("│ ").startswith("cost "))
    assert (
        "/hour while a container runs: " in cost and "CPU and memory 20" in cost
    )  # the whole row, on one line
    note = next(line for line in lines if line.startswith("note:"))
    assert note.endswith("to trade concurrency for context")  # a note is one line
    r = cli("config")
    row = next(line for line in r.stdout.splitlines() if " app_name " in line)
    assert "gpt-oss-vllm-inference" in row and "default" in row
