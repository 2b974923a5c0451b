"""The model's weights into the `huggingface-cache` volume, on a CPU, before any GPU waits for them.

A GPU container that finds the volume empty downloads the weights inside its start-up (12.8 GiB for 20b,
60.8 GiB for 120b), billed at the GPU's price and bounded by its startup timeout. So `gpt-oss-modal deploy`
and `run` first run `download` in a CPU-only Modal function (`modal_app.download_weights`) whenever the
volume lacks the pinned revision; `gpt-oss-modal download` runs it by hand.

- **Only what vLLM loads**: the config, generation config, tokenizer files and chat template (`*.json`,
  `*.jinja`) and the safetensors shards with their index. The repositories also hold `original/` (the same
  weights in OpenAI's own layout, which vLLM's default `--ignore-patterns original/**/*` skips) and `metal/`
  (a checkpoint for Apple's Metal runtime): 13 GiB more for 20b that nobody here reads.
- **Idempotent and resumable**: Hugging Face's `snapshot_download` skips files already in the cache and
  resumes partial ones; a marker written last (atomically: a temporary file, then a rename, since a volume
  commit may catch a half-written file) says the whole revision is there, so a second call returns at once
  and `deploy` can check for it with one listing of the volume, without starting a container.
- **Progress in the log**: every PROGRESS_EVERY_S seconds a line with the bytes downloaded, the rate and
  the time left, measured on disk (the cache's blobs grow as they download), whichever transfer library
  huggingface_hub uses.

Nothing here imports Modal: the function's body calls `download`, and the CLI only needs `marker_path`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.files import write_atomically

Log = Callable[[str], None]

ALLOW_PATTERNS = ["*.json", "*.jinja", "*.safetensors"]
IGNORE_PATTERNS = ["original/*", "metal/*"]
MARKER_DIR = "gpt-oss-modal"  # in the volume, beside Hugging Face's own `hub/`
PROGRESS_EVERY_S = 15.0

# The download function's container: a few cores for hf_xet's parallel transfers and hashing, and memory for
# its buffers and for vLLM's model inspection beside it (server.model_info: two Python processes of ~0.9 GiB
# each, ~20 s on 2 cores); about $0.25 an hour at Modal's list prices (catalog), so a 20b download costs
# cents.
CPU = 4.0
MEMORY_MIB = 8 * 1024
# Long enough for 120b at a quarter of the startup timeout's assumed rate; a download cut short resumes on
# the next call, and a stuck one costs a CPU's price, not a GPU's.
TIMEOUT_S = 3 * 60 * 60


def log(message: str) -> None:
    print(f"[gpt-oss-modal] {message}", file=sys.stderr, flush=True)


def marker_path(repo_id: str, revision: str) -> str:
    """The marker of a complete download, relative to the volume's root (the container's HF_HOME)."""
    return f"{MARKER_DIR}/{repo_id.replace('/', '--')}@{revision}.json"


def repos(cfg: DeployConfig) -> list[tuple[str, str]]:
    """What the engine loads from the Hugging Face cache for cfg: the model at its pinned revision, and the
    speculative drafter at its own when `speculative` is on."""
    wanted = [(cfg.model, cfg.revision)]
    if cfg.drafter is not None and cfg.drafter.revision:
        wanted.append((cfg.drafter.repo, cfg.drafter.revision))
    return wanted


def config_marker_paths(cfg: DeployConfig) -> list[str]:
    """The markers of every complete download cfg needs (`repos`)."""
    return [marker_path(repo, revision) for repo, revision in repos(cfg)]


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def progress_line(done: int, total: int, elapsed: float) -> str:
    """`6.2 GiB of 12.8 GiB (48%), 85.3 MiB/s, 1 min 19 s left`: what a log line says about a download."""
    share = f" ({100 * done / total:.0f}%)" if total else ""
    rate = done / elapsed if elapsed > 0 else 0.0
    line = f"{human_bytes(done)} of {human_bytes(total)}{share}, {human_bytes(rate)}/s"
    if rate > 0 and total > done:
        left = int((total - done) / rate)
        line += f", {left // 60} min {left % 60} s left" if left >= 60 else f", {left} s left"
    return line


def tree_bytes(path: Path) -> int:
    """Bytes of every file under `path` (partial downloads included); 0 when it does not exist."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass  # renamed from .incomplete to its final name between listing and stat
    return total


class Progress:
    """Logs a download's progress every `every` seconds from a thread, measured as growth of `watched`."""

    def __init__(self, watched: Path, total: int, *, every: float = PROGRESS_EVERY_S, log: Log = log):
        self.watched, self.total, self.every, self.log = watched, total, every, log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="download-progress", daemon=True)

    def done(self) -> int:
        return max(0, tree_bytes(self.watched) - self._baseline)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.log("downloading: " + progress_line(self.done(), self.total, time.monotonic() - self._start))

    def __enter__(self) -> Progress:
        self._baseline, self._start = tree_bytes(self.watched), time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class Fetched:
    repo_id: str
    revision: str
    files: int
    bytes: int  # of the whole revision's selected files
    downloaded: int  # what this call had to fetch (0 when the volume had it all)
    seconds: float
    already: bool = False  # the marker was there: nothing was even listed

    def summary(self) -> str:
        what = f"{self.repo_id}@{self.revision[:12]}"
        if self.already:
            return f"weights of {what} already in the volume"
        rate = (
            f", {human_bytes(self.downloaded / self.seconds)}/s"
            if self.seconds > 0 and self.downloaded
            else ""
        )
        return (
            f"weights of {what}: {self.files} files, {human_bytes(self.bytes)}; downloaded "
            f"{human_bytes(self.downloaded)} in {self.seconds:.0f} s{rate}"
        )


def download(
    repo_id: str,
    revision: str,
    hf_home: Path,
    *,
    commit: Callable[[], None] | None = None,
    log: Log = log,
    every: float = PROGRESS_EVERY_S,
) -> Fetched:
    """Fetch what vLLM loads of `repo_id` at `revision` into the Hugging Face cache under `hf_home` (the
    volume's mount), write the marker, then `commit` (the volume's commit, so other containers see it).

    HF_TOKEN, when set (the `hf_token_secret` Secret), is used by huggingface_hub itself.
    """
    marker = hf_home / marker_path(repo_id, revision)
    if marker.exists():
        result = Fetched(repo_id, revision, 0, 0, 0, 0.0, already=True)
        log(result.summary())
        return result
    # hf_xet keeps a chunk cache under HF_HOME by default: on the volume that would be gigabytes of chunks
    # beside the files they make up. Set before huggingface_hub is imported, which reads it once.
    os.environ.setdefault("HF_XET_CACHE", "/tmp/hf-xet-cache")
    from huggingface_hub import snapshot_download

    start = time.monotonic()
    hub = hf_home / "hub"
    options = dict(
        repo_id=repo_id,
        revision=revision,
        cache_dir=hub,
        allow_patterns=ALLOW_PATTERNS,
        ignore_patterns=IGNORE_PATTERNS,
    )
    planned = snapshot_download(**options, dry_run=True)
    total = sum(f.file_size or 0 for f in planned)
    missing = sum(f.file_size or 0 for f in planned if f.will_download)
    log(
        f"{repo_id}@{revision[:12]}: {len(planned)} files, {human_bytes(total)}; "
        f"{human_bytes(missing)} to download into {hub}"
    )
    storage = hub / f"models--{repo_id.replace('/', '--')}"
    with Progress(storage / "blobs", missing, every=every, log=log):
        snapshot_download(**options)
    seconds = time.monotonic() - start
    result = Fetched(repo_id, revision, len(planned), total, missing, seconds)
    files = sorted(f.filename for f in planned)
    write_atomically(marker, json.dumps({"files": files, "bytes": total}, indent=1) + "\n")
    if commit is not None:
        commit()
    log(result.summary())
    return result
