#!/usr/bin/env bash
# On the GPU host, after prepare_host.sh: install the rest of the container's lock from the transfers that
# pack_lock_wheels.py made (copied into /root/lock), then show what uv would still install for the lock.
#   bash benchmarks/install_lock_on_host.sh            (repo root on the host)
# Prints uv's answer to `uv pip install --dry-run --require-hashes -r LOCK` (offline, no index) and the
# packages that still differ from the lock; writes both to /root/res/lock/.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
LOCK=$(ls "$HERE"/../src/gpt_oss_modal/deploy/locks/container-vllm-*.txt | tail -1)
W=/root/lock; OUTD=/root/res/lock; mkdir -p "$OUTD" "$W/whl"
cd "$W"
python3 - <<'PY'
import hashlib, json, pathlib
w = pathlib.Path("/root/lock")
for m in json.loads((w / "lock_wheels.json").read_text()):
    dst = w / "whl" / m["wheel"]
    if m["parts"]:
        parts = sorted(w.glob(m["wheel"] + ".part*"))
        assert len(parts) == m["parts"], (m["wheel"], len(parts))
        dst.write_bytes(b"".join(p.read_bytes() for p in parts))
    else:
        (w / m["wheel"]).rename(dst) if (w / m["wheel"]).exists() else None
    assert hashlib.sha256(dst.read_bytes()).hexdigest() == m["sha256"], m["wheel"]
print("wheels reassembled and checked:", len(list((w / "whl").glob("*.whl"))))
PY
t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps whl/*.whl 2>&1 | grep -v "^WARNING: Running pip as" | tail -5
echo "installed in $(( $(date +%s) - t0 )) s"
PY=$(command -v python3)
uv --version
uv pip install --dry-run --require-hashes --only-binary :all: --offline --no-index --python "$PY" --system \
  -r "$LOCK" >"$OUTD/uv_dry_run.txt" 2>&1
echo "uv exit $?"; cat "$OUTD/uv_dry_run.txt" | tail -20
python3 -m pip list --format=freeze >"$OUTD/freeze_after.txt" 2>/dev/null
PYTHONPATH="$HERE/../src" python3 "$HERE/pack_lock_wheels.py" "$OUTD/freeze_after.txt" --lock "$LOCK" --check \
  | tee "$OUTD/differences.txt"
