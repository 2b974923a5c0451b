"""The Vercel AI SDK (npm `ai` + `@ai-sdk/openai-compatible`, pinned in tests/e2e/node) against the real local
server, from a Node script (tests/e2e/node/ai_sdk.mjs): generateText, streamText, the reasoning, and one
tool call. A wire tap between Node and the server shows what the SDK sent, headers included.

The tiny model's scripts are chosen by `logit_bias`, which the SDK has no setting for; the provider's
`providerOptions.<name>` fields are sent as they are in the request body, which is how it travels here.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import node_packages
import pytest
from wiretap import WireTap

from gpt_oss_modal.local import tiny

pytestmark = pytest.mark.e2e

RUN_TIMEOUT = 600  # a bound on a hang: four requests on a busy CPU
KEY = "sk-bearer-test"


@pytest.fixture(scope="module")
def ai_sdk_script() -> Path:
    return node_packages.script(node_packages.install(), "ai_sdk.mjs")


def test_generate_stream_reasoning_and_a_tool_call(server, ai_sdk_script: Path) -> None:
    bias = {"reasoning": tiny.SCRIPTS["reasoning"].logit_bias, "tool": tiny.SCRIPTS["tool"].logit_bias}
    env = {"PATH": os.environ["PATH"], "HOME": str(ai_sdk_script.parent), "GPT_OSS_API_KEY": KEY}
    with WireTap(server.url) as tap:
        r = subprocess.run(
            ["node", ai_sdk_script.name, f"{tap.url}/v1", json.dumps(bias)],
            cwd=ai_sdk_script.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])

    assert out["text"] == tiny.FINAL_TEXT and out["finishReason"] == "stop"
    assert len(out["streamed"]) > 1 and "".join(out["streamed"]) == tiny.FINAL_TEXT
    assert out["reasoning"] == tiny.REASONING_TEXT and out["reasonedText"] == tiny.FINAL_TEXT
    assert out["toolCalls"] == [{"name": tiny.TOOL_NAME, "input": tiny.TOOL_ARGUMENTS}]
    assert out["toolFinishReason"] == "tool-calls"

    # Over the wire: four chat completions, the second streamed, the bias in the body, both kinds of auth.
    assert [(ex.method, ex.path, ex.status) for ex in tap.exchanges] == [
        ("POST", "/v1/chat/completions", 200)
    ] * 4
    generate, stream, reasoned, called = (ex.body for ex in tap.exchanges)
    assert stream["stream"] is True and not generate.get("stream")
    assert tap.exchanges[1].content_type.startswith("text/event-stream")
    assert reasoned["logit_bias"] == bias["reasoning"] and called["logit_bias"] == bias["tool"]
    assert [t["function"]["name"] for t in called["tools"]] == [tiny.TOOL_NAME]
    for ex in tap.exchanges:
        assert ex.headers["authorization"] == f"Bearer {KEY}"
        assert (ex.headers["modal-key"], ex.headers["modal-secret"]) == ("wk-test", "ws-test")
