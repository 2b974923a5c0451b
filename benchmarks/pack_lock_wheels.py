"""Pack the lock's wheels that a GPU host lacks into transfers of at most PART_BYTES each.

On a machine with PyPI (repo root), given what the host has (`python3 -m pip list --format=freeze` there,
before or after the vLLM kit: the kit's pins, benchmarks/wheels.txt, count as installed either way):

    python3 benchmarks/pack_lock_wheels.py HOST_FREEZE.txt [--lock src/gpt_oss_modal/deploy/locks/...]

On the host, `--check` says how its packages differ from the lock (install_lock_on_host.sh runs it).
The H200 host of study v4 answered `benchmarks/results_v4/lock/host_freeze_before.txt`: with it, the
transfers can be packed before the host is taken.

Every lock entry the host lacks, or has at another version, is downloaded (`pip download --no-deps
--require-hashes`, wheels only, CPython 3.12, manylinux up to 2_39), plus uv itself (the lock's header names
its version) so that the host can show `uv pip install --dry-run --require-hashes -r LOCK` has nothing left to
do. The wheels go into .gpu/x1, .gpu/x2, ... (git-ignored); a wheel larger than a transfer is split into
parts. `install_lock_on_host.sh` reassembles them there (checking each wheel's sha256) and installs them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.deploy.image import lock_path, normalise, read_lock

ROOT = Path(__file__).resolve().parents[1]
LOCK = lock_path(DeployConfig().vllm_version)  # the image's lock
PART_BYTES = int(os.environ.get("PART_BYTES", "62000000"))
PLATFORMS = [f"manylinux_2_{minor}" for minor in range(39, 4, -1)] + [
    "manylinux2014",
    "manylinux2010",
    "manylinux1",
]


def public(version: str) -> str:
    """2.11.0+cu130 satisfies ==2.11.0 (PEP 440 ignores the local label of a candidate)."""
    return version.split("+", 1)[0]


def lock_entries(text: str) -> dict[str, str]:
    """normalised name -> the lock's entry for it, with its hashes (what `pip download --require-hashes`
    takes); the versions are read_lock's."""
    out = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==", block)
        if m:
            entry = "\n".join(ln for ln in block.splitlines() if not ln.strip().startswith("#"))
            out[normalise(m.group(1))] = entry.rstrip(" \\\n")
    return out


def host_versions(freeze: str) -> dict[str, str]:
    out = {}
    for line in freeze.splitlines():
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line.strip())
        if m:
            out[normalise(m.group(1))] = m.group(2)
    return out


def download(requirements: str, dest: Path) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write(requirements)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:"]
    cmd += ["--python-version", "3.12", "--implementation", "cp", "-d", str(dest), "-r", fh.name]
    for p in PLATFORMS:
        cmd += ["--platform", f"{p}_x86_64"]
    cmd += ["--platform", "any"]
    subprocess.run(cmd, check=True)


def pack(wheels: list[Path], out: Path, part_bytes: int) -> list[dict]:
    """First-fit decreasing into folders x1..xN; a wheel over part_bytes is split. Returns the manifest."""
    pieces: list[tuple[int, Path, int]] = []  # (size, wheel, part index or -1 for the whole file)
    manifest = []
    for w in sorted(wheels, key=lambda p: -p.stat().st_size):
        size = w.stat().st_size
        sha = hashlib.sha256(w.read_bytes()).hexdigest()
        parts = -(-size // part_bytes) if size > part_bytes else 0
        manifest.append({"wheel": w.name, "bytes": size, "sha256": sha, "parts": parts})
        if parts:
            pieces += [(min(part_bytes, size - i * part_bytes), w, i) for i in range(parts)]
        else:
            pieces.append((size, w, -1))
    bins: list[list[tuple[int, Path, int]]] = []
    for piece in sorted(pieces, key=lambda p: -p[0]):
        for b in bins:
            if sum(p[0] for p in b) + piece[0] <= part_bytes:
                b.append(piece)
                break
        else:
            bins.append([piece])
    for i, b in enumerate(bins, 1):
        d = out / f"x{i}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for size, w, part in b:
            if part < 0:
                shutil.copy2(w, d / w.name)
            else:
                with w.open("rb") as src:
                    src.seek(part * part_bytes)
                    (d / f"{w.name}.part{part:02d}").write_bytes(src.read(size))
    (out / "x1" / "lock_wheels.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("freeze", type=Path, help="the host's `pip list --format=freeze`")
    ap.add_argument("--lock", type=Path, default=LOCK)
    ap.add_argument(
        "--kit",
        type=Path,
        default=ROOT / "benchmarks/wheels.txt",
        help="pins the host gets from the vLLM kit (prepare_host.sh) before this: counted as installed",
    )
    ap.add_argument(
        "--check",
        action="store_true",
        help="only say how FREEZE differs from the lock (on the host, after the install); the kit not counted",
    )
    ap.add_argument("--wheels", type=Path, default=ROOT / ".gpu/lock_wheels", help="download cache")
    ap.add_argument("--out", type=Path, default=ROOT / ".gpu")
    a = ap.parse_args()
    lock, entries = read_lock(a.lock), lock_entries(a.lock.read_text())
    kit = host_versions(a.kit.read_text()) if a.kit.exists() and not a.check else {}
    host = {**host_versions(a.freeze.read_text()), **kit}
    wanted = {n: v for n, v in lock.pins.items() if public(host.get(n, "")) != v}
    if a.check:
        print(f"lock entries {len(lock.pins)}; differing on the host {len(wanted)}:")
        for n, v in sorted(wanted.items()):
            print(f"  {n}=={v} (host: {host.get(n, '-')})")
        beyond = sorted(set(host) - set(lock.pins))
        print(f"installed beyond the lock ({len(beyond)}): {' '.join(beyond)}")
        return 0
    uv = lock.header.get("uv")
    print(f"{len(lock.pins)} lock entries, {len(wanted)} missing or at another version on the host:")
    for n, v in sorted(wanted.items()):
        print(f"  {n}=={v} (host: {host.get(n, '-')})")
    a.wheels.mkdir(parents=True, exist_ok=True)
    download("\n".join(entries[n] for n in wanted) + "\n", a.wheels)
    if uv:
        download(f"uv=={uv}\n", a.wheels)
    names = set(wanted) | ({"uv"} if uv else set())
    wheels = [w for w in a.wheels.glob("*.whl") if normalise(w.name.split("-")[0]) in names]
    manifest = pack(wheels, a.out, PART_BYTES)
    folders = sorted(p.name for p in a.out.glob("x*") if p.is_dir())
    total = sum(m["bytes"] for m in manifest)
    print(f"{len(manifest)} wheels, {total / 1e6:.0f} MB, in {len(folders)} transfers: {' '.join(folders)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
