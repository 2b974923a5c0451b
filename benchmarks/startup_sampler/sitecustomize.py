"""A start-up sampler for every Python process of a `vllm serve` tree (API server, engine core, helpers).

Put this folder first on PYTHONPATH and set STARTUP_SAMPLES=<dir>: each process (spawned or forked) then
writes <dir>/<pid>.tsv, one line per 20 ms: seconds since the epoch, the imports in progress on the main
thread (outermost first, comma-separated, or "-"), and the main thread's six innermost frames. No permissions
needed (py-spy would need ptrace). Samples stop after STARTUP_SAMPLE_S seconds (default 120). Then the next
sitecustomize on the path runs (the product's, for an arm that has it), so the sampled start is the arm's.
"""

import importlib.util
import os
import sys
import threading
import time

_DIR = os.environ.get("STARTUP_SAMPLES")


def _frames(frame):
    imports, stack = [], []
    while frame is not None:
        code = frame.f_code
        if code.co_name == "_find_and_load" and "importlib" in code.co_filename:
            name = frame.f_locals.get("name")
            if isinstance(name, str):
                imports.append(name)
        stack.append(f"{os.path.basename(code.co_filename)}:{code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return ",".join(reversed(imports)) or "-", stack


def _loop(main_id, stop_at):
    path = os.path.join(_DIR, f"{os.getpid()}.tsv")
    with open(path, "a", buffering=1) as fh:
        fh.write(f"# pid {os.getpid()} ppid {os.getppid()} argv {' '.join(sys.argv)[:300]}\n")
        while time.time() < stop_at:
            frame = sys._current_frames().get(main_id)
            if frame is not None:
                chain, stack = _frames(frame)
                keep = [s for s in stack if "importlib" not in s][:6]
                fh.write(f"{time.time():.3f}\t{chain}\t{' < '.join(keep)}\n")
            time.sleep(0.02)


def _start():
    stop_at = time.time() + float(os.environ.get("STARTUP_SAMPLE_S", "120"))
    threading.Thread(target=_loop, args=(threading.main_thread().ident, stop_at), daemon=True).start()


def _chain():
    """Run the next sitecustomize after this folder on sys.path, if any (never one before it: that one may
    be what ran this file)."""
    here = os.path.dirname(os.path.abspath(__file__))
    entries = [os.path.abspath(entry or os.getcwd()) for entry in sys.path]
    for entry in entries[entries.index(here) + 1 :] if here in entries else []:
        path = os.path.join(entry, "sitecustomize.py")
        if entry != here and os.path.isfile(path):
            spec = importlib.util.spec_from_file_location("sitecustomize", path)  # it may chain on
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
            return


if _DIR:
    os.makedirs(_DIR, exist_ok=True)
    _start()
    os.register_at_fork(after_in_child=_start)
_chain()
