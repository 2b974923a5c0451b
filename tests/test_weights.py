"""The weights download's pure parts: which files, the marker, the progress lines, idempotence."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from gpt_oss_modal import files
from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.deploy import weights

# openai/gpt-oss-20b's files at the pinned revision (the 120b repository has the same layout, 15 shards).
GPT_OSS_20B_FILES = [
    ".gitattributes", "LICENSE", "README.md", "USAGE_POLICY", "chat_template.jinja", "config.json",
    "generation_config.json", "metal/model.bin", "model-00000-of-00002.safetensors",
    "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
    "original/config.json", "original/dtypes.json", "original/model.safetensors", "special_tokens_map.json",
    "tokenizer.json", "tokenizer_config.json",
]  # fmt: skip


def test_only_the_files_vllm_loads_are_fetched() -> None:
    from huggingface_hub.utils import filter_repo_objects

    chosen = set(
        filter_repo_objects(
            GPT_OSS_20B_FILES, allow_patterns=weights.ALLOW_PATTERNS, ignore_patterns=weights.IGNORE_PATTERNS
        )
    )
    assert chosen == {
        "chat_template.jinja", "config.json", "generation_config.json", "model.safetensors.index.json",
        "model-00000-of-00002.safetensors", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
    }  # fmt: skip
    # Not OpenAI's own layout (vLLM ignores original/ by default) nor the Metal checkpoint.
    assert not any(f.startswith(("original/", "metal/")) for f in chosen)


def test_the_marker_names_the_model_and_revision() -> None:
    cfg = DeployConfig(model="120b", gpu="H100")
    assert weights.config_marker_paths(cfg) == [f"gpt-oss-modal/openai--gpt-oss-120b@{cfg.revision}.json"]
    assert weights.config_marker_paths(cfg.model_copy(update={"model_revision": "abc"}))[0].endswith(
        "@abc.json"
    )


def test_speculative_decoding_downloads_the_drafter_beside_the_weights() -> None:
    cfg = DeployConfig(model="20b", speculative="eagle3")
    drafter = cfg.drafter
    assert weights.repos(cfg) == [(cfg.model, cfg.revision), (drafter.repo, drafter.revision)]
    assert weights.config_marker_paths(cfg)[1] == (
        f"gpt-oss-modal/RedHatAI--gpt-oss-20b-speculator.eagle3@{drafter.revision}.json"
    )


def test_progress_lines_say_bytes_rate_and_time_left() -> None:
    gib = 1024**3
    assert (
        weights.progress_line(6 * gib, 12 * gib, 60.0)
        == "6.0 GiB of 12.0 GiB (50%), 102.4 MiB/s, 1 min 0 s left"
    )
    assert weights.progress_line(gib, 2 * gib, 20.0) == "1.0 GiB of 2.0 GiB (50%), 51.2 MiB/s, 20 s left"
    assert weights.progress_line(0, gib, 5.0) == "0 B of 1.0 GiB (0%), 0 B/s"  # no rate yet: no estimate
    assert weights.progress_line(gib, gib, 10.0).endswith("MiB/s")  # done: nothing left to estimate


def test_progress_is_measured_on_disk(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / "old").write_bytes(b"x" * 100)  # already there before: not counted as downloaded
    lines: list[str] = []
    logged = threading.Event()

    def log(line: str) -> None:
        lines.append(line)
        if "1.0 KiB of" in line:
            logged.set()

    with weights.Progress(blobs, 4096, every=0.01, log=log) as progress:
        (blobs / "new.incomplete").write_bytes(b"y" * 1024)  # a partial download counts
        assert logged.wait(30)
        assert progress.done() == 1024
    assert all(line.startswith("downloading: ") for line in lines)
    assert weights.tree_bytes(tmp_path / "missing") == 0


def test_a_complete_revision_returns_at_once(tmp_path: Path) -> None:
    marker = tmp_path / weights.marker_path("openai/gpt-oss-20b", "abc")
    files.write_atomically(marker, json.dumps({"files": ["config.json"], "bytes": 1}))
    assert json.loads(marker.read_text())["bytes"] == 1
    assert not list(marker.parent.glob(".*.tmp"))  # the temporary file was renamed, not left behind
    said: list[str] = []
    fetched = weights.download("openai/gpt-oss-20b", "abc", tmp_path, log=said.append, commit=pytest.fail)
    assert fetched.already and said == ["weights of openai/gpt-oss-20b@abc already in the volume"]
