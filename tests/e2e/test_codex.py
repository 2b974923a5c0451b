"""Codex CLI (npm `@openai/codex`, pinned in tests/e2e/node) against the real local server, configured with
nothing but a provider block, as docs/clients.md shows.

Codex speaks only the Responses API, streamed. Its request carries its own tools, among them a `namespace`
tool and the hosted `web_search`, which vLLM alone refuses; the compat middleware (gpt_oss_modal.server.compat)
makes them acceptable, and the tiny checkpoint's context (16,384) holds Codex's ~7,300-token prompt. A wire
tap between Codex and the server shows what Codex sent and how the answer came back.

Codex runs in a throw-away CODEX_HOME and HOME, with every proxy variable pointing at a closed port and only
127.0.0.1 exempt, so that it can reach nothing but the local server: no login, no update check, no
telemetry leaves the machine, and the test shows that none of them is needed.

A tool call: the tiny model's tool script calls `get_weather` only when the request carries the script's
`logit_bias`, and Codex has no way to add fields to its requests (its provider block sets headers and
query parameters only) nor a `get_weather` tool. So Codex's tool loop is not exercised here; the tools it
sends are (they reach the model and the request is served).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import node_packages
import pytest
from wiretap import WireTap

from gpt_oss_modal.local import tiny

pytestmark = pytest.mark.e2e

CODEX_VERSION = "0.169.0"
KEY = "codex-e2e-key"  # guards a server on 127.0.0.1 for the length of this module
KEY_ENV = "GPT_OSS_API_KEY_FOR_CODEX"
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens
RUN_TIMEOUT = 900  # a bound on a hang: Codex's prompt is ~7,300 tokens of prefill on a busy CPU


@pytest.fixture(scope="module")
def codex() -> Path:
    home = node_packages.install()
    binary = home / "node_modules" / ".bin" / "codex"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=120)
    assert version.stdout.split() == ["codex-cli", CODEX_VERSION], version
    return binary


def provider_block(base_url: str, *, env_key: str | None = None) -> str:
    """The whole configuration: docs/clients.md's, pointed at `base_url` (the server's /v1 URL)."""
    lines = [
        'model = "llm"',
        'model_provider = "gpt-oss"',
        "",
        "[model_providers.gpt-oss]",
        'name = "gpt-oss on Modal"',
        f'base_url = "{base_url}"',
        'wire_api = "responses"',
    ]
    if env_key:
        lines.append(f'env_key = "{env_key}"')
    return "\n".join(lines) + "\n"


def run_codex(
    codex: Path, tmp_path: Path, base_url: str, prompt: str, *, env_key: str | None = None, **env: str
):
    """`codex exec --json` in a fresh CODEX_HOME; returns (the JSONL events, the last message, the process)."""
    home = tmp_path / "codex-home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(provider_block(base_url, env_key=env_key))
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    last = tmp_path / "last-message.txt"
    isolated = {
        "PATH": os.environ["PATH"],
        "HOME": str(work),
        "CODEX_HOME": str(home),
        **{
            k: CLOSED
            for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
        },
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        **env,
    }
    argv = [str(codex), "exec", "--json", "--skip-git-repo-check", "--ephemeral", "-o", str(last), prompt]
    r = subprocess.run(
        argv,
        cwd=work,
        env=isolated,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return events, (last.read_text() if last.exists() else None), r


def agent_messages(events: list[dict]) -> list[str]:
    return [
        e["item"]["text"]
        for e in events
        if e["type"] == "item.completed" and e["item"].get("type") == "agent_message"
    ]


def test_codex_exec_with_a_provider_block(codex: Path, server, tmp_path: Path) -> None:
    with WireTap(server.url) as tap:
        events, last, r = run_codex(codex, tmp_path, f"{tap.url}/v1", "Say hello")
    assert r.returncode == 0, r.stderr[-3000:]
    assert agent_messages(events) == [tiny.FINAL_TEXT] and last.strip() == tiny.FINAL_TEXT
    (usage,) = [e["usage"] for e in events if e["type"] == "turn.completed"]
    assert (
        usage["input_tokens"] > 4096 and usage["output_tokens"] > 0
    )  # the prompt the old 4,096 could not hold

    # Over the wire: one streamed Responses request, carrying the tools vLLM alone refuses, served as a stream.
    (ex,) = tap.exchanges
    assert (ex.method, ex.path, ex.status) == ("POST", "/v1/responses", 200)
    assert ex.body["stream"] is True and ex.body["model"] == "llm"
    kinds = {t["type"] for t in ex.body["tools"]}
    assert {"namespace", "web_search", "function"} <= kinds
    assert "authorization" not in ex.headers  # no key configured: none sent
    assert ex.content_type.startswith("text/event-stream")
    events_sent = ex.events()
    deltas = [e["delta"] for e in events_sent if e["type"] == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == tiny.FINAL_TEXT  # the reply really streamed
    assert events_sent[-1]["type"] == "response.completed"
    # the namespace's members were offered to the model as function tools under their flat names
    offered = {t["name"] for t in events_sent[-1]["response"]["tools"]}
    assert "multi_agent_v1__spawn_agent" in offered and "web_search" not in {
        t["type"] for t in events_sent[-1]["response"]["tools"]
    }


# --- behind a bearer key ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(
    tmp_path_factory: pytest.TempPathFactory, startup_timeout: float, engine_starter
) -> Iterator:
    from gpt_oss_modal.core.config import DeployConfig
    from gpt_oss_modal.local import server as lo

    srv = lo.LocalServer(
        DeployConfig(model="tiny", port=lo.free_port(), max_inputs=2, api_key=KEY),
        target="local-cpu",
        checkpoint=lo.tiny_checkpoint(scripted=True),
        log_path=tmp_path_factory.mktemp("codex-keyed-engine") / "engine.log",
    )
    engine_starter(srv, startup_timeout, "the local engine with a bearer key")
    try:
        yield srv
    finally:
        srv.stop()


def test_codex_sends_the_key_from_env_key(codex: Path, keyed_server, tmp_path: Path) -> None:
    with WireTap(keyed_server.url) as tap:
        events, last, r = run_codex(
            codex, tmp_path, f"{tap.url}/v1", "Say hello", env_key=KEY_ENV, **{KEY_ENV: KEY}
        )
    assert r.returncode == 0, r.stderr[-3000:]
    assert agent_messages(events) == [tiny.FINAL_TEXT] and last.strip() == tiny.FINAL_TEXT
    assert {ex.headers.get("authorization") for ex in tap.exchanges} == {f"Bearer {KEY}"}


def test_codex_without_the_key_is_refused(codex: Path, keyed_server, tmp_path: Path) -> None:
    """A wrong key: the server's 401 reaches the user as an error, and Codex exits non-zero."""
    events, last, r = run_codex(
        codex, tmp_path, f"{keyed_server.url}/v1", "Say hello", env_key=KEY_ENV, **{KEY_ENV: "wrong"}
    )
    assert r.returncode != 0 and not agent_messages(events)
    assert "401" in r.stdout + r.stderr or "Incorrect API key" in r.stdout + r.stderr
