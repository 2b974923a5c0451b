"""`gpt-oss-modal doctor`: the container a config deploys, described and checked without calling Modal.

`report(cfg)` gathers what the app would send to Modal for cfg -- the image (base, Python, the lock and its
hash, the environment), the pinned model revision, the volumes and where they are mounted, every cache and
the volume it lands on, the engine command -- plus a few checks that the image hangs together. `render`
prints it for people; `--json` prints `report` itself.
"""

from __future__ import annotations

import shlex
from typing import Any

from gpt_oss_modal.core import engine
from gpt_oss_modal.core.config import DeployConfig
from gpt_oss_modal.deploy import image, modal_ops

# Volume per mount path, as the app mounts them.
VOLUMES = {v.mount: v.name for v in engine.CACHE_VOLUMES}


def volume_of(path: str) -> str | None:
    """The volume a container path lies on, or None when it is on the container's own, throw-away disk."""
    for mount, name in VOLUMES.items():
        if path == mount or path.startswith(mount + "/"):
            return name
    return None


def revision(cfg: DeployConfig, argv: list[str]) -> str:
    """The model revision the engine loads: the command's --revision, else the catalog's pin."""
    if "--revision" in argv:
        return argv[argv.index("--revision") + 1]
    assert cfg.model_info is not None  # check_deployable refused the tiny model already
    return cfg.model_info.revision


def checks(spec: image.ImageSpec, caches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    lock = spec.lock
    torch_cuda = lock.torch_cuda or "unknown"
    unhashed = sorted(set(lock.pins) - lock.hashed)
    off_volume = [c["env"] for c in caches if c["volume"] is None]
    sampler = spec.env.get("VLLM_USE_FLASHINFER_SAMPLER")
    return [
        {
            "check": f"base CUDA {spec.cuda} has the major version of torch's CUDA {torch_cuda}",
            "ok": spec.cuda.split(".")[0] == torch_cuda.split(".")[0],
        },
        {
            "check": f"every one of the {len(lock.pins)} packages is pinned with a hash"
            + (f" (not: {', '.join(unhashed)})" if unhashed else ""),
            "ok": not unhashed and "vllm" in lock.pins,
        },
        {
            "check": "every cache directory is on a volume"
            + (f" (not: {', '.join(off_volume)})" if off_volume else ""),
            "ok": not off_volume,
        },
        {
            "check": f"FlashInfer's sampler is set explicitly (VLLM_USE_FLASHINFER_SAMPLER={sampler})",
            "ok": sampler in ("0", "1"),
        },
    ]


def report(cfg: DeployConfig) -> dict[str, Any]:
    """Everything the app would deploy for cfg; ConfigError (one line) when cfg cannot be deployed."""
    # The tiny model, a GPU it does not fit, a vLLM release with no lock: refused here, with the plan kept.
    plan = modal_ops.check_deployable(cfg)
    command = engine.build_command(cfg, target="modal", plan=plan)
    spec = image.image_spec(cfg, env=command.env)
    caches = [
        {"env": key, "path": value, "volume": volume_of(value)}
        for key, value in sorted(command.env.items())
        if value.startswith("/")
    ]
    return {
        "image": spec.to_dict(),
        "model": {"id": cfg.model, "revision": revision(cfg, command.argv)},
        "gpu": cfg.gpu,
        "volumes": [{"name": name, "mount": mount} for mount, name in VOLUMES.items()],
        "caches": caches,
        "command": {"argv": command.argv, "env": command.env, "shell": command.shell()},
        "checks": checks(spec, caches),
    }


def render(r: dict[str, Any]) -> str:
    """The report as aligned text: one labelled line per fact, continuation lines indented."""
    img, lock = r["image"], r["image"]["lock"]
    rows: list[tuple[str, str]] = [
        ("image", f"{img['base']} + Python {img['python']} (CUDA {img['cuda']})"),
        ("lock", lock["path"]),
        ("", f"sha256 {lock['sha256']}"),
        (
            "",
            f"{lock['packages']} packages for {lock['platform']}: vllm {lock['vllm']}, torch {lock['torch']} "
            f"(CUDA {lock['torch_cuda']}); resolved by uv {lock['uv']}",
        ),  # fmt: skip
        ("install", img["install"]),
        ("model", f"{r['model']['id']} @ {r['model']['revision']}"),
        ("gpu", r["gpu"]),
    ]
    rows += [
        ("volumes" if i == 0 else "", f"{v['name']} at {v['mount']}") for i, v in enumerate(r["volumes"])
    ]
    rows += [
        ("caches" if i == 0 else "", f"{c['env']}={c['path']} ({c['volume'] or 'NOT ON A VOLUME'})")
        for i, c in enumerate(r["caches"])
    ]
    plain = [(k, v) for k, v in img["env"].items() if not v.startswith("/")]  # the paths are listed above
    rows += [("env" if i == 0 else "", f"{k}={v}") for i, (k, v) in enumerate(plain)]
    rows.append(("command", shlex.join(r["command"]["argv"])))  # its environment: the lines above
    rows += [
        ("checks" if i == 0 else "", f"{'ok ' if c['ok'] else 'FAIL'} {c['check']}")
        for i, c in enumerate(r["checks"])
    ]
    width = max(len(label) for label, _ in rows) + 2
    return "\n".join(f"{label:<{width}}{value}" for label, value in rows)


def failed(r: dict[str, Any]) -> list[str]:
    return [c["check"] for c in r["checks"] if not c["ok"]]


# --- `doctor --remote`: the same facts, asked of the image on the GPU -------------------------------------

# The oldest driver CUDA 13 runs on (the image's torch is built for CUDA 13.0).
MIN_DRIVER = 580
# The longest `doctor --remote` may run: importing vLLM and asking it a few questions takes well under a
# minute once the image is built; the bound keeps a hung import from billing the GPU for long.
PROBE_TIMEOUT_S = 5 * 60


def _attempt(fact: dict[str, Any], key: str, ask: Any) -> None:
    """fact[key] = ask(), or the error in one line: a probe reports what it could not learn, and goes on."""
    try:
        fact[key] = ask()
    except Exception as e:  # any failure is a finding, not a crash
        fact[key] = None
        fact.setdefault("errors", {})[key] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"


def _nvidia_smi() -> dict[str, str]:
    import subprocess

    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip().splitlines()  # fmt: skip
    name, driver, memory = (part.strip() for part in out[0].split(","))
    return {"name": name, "driver": driver, "memory": memory, "count": str(len(out))}


def _torch() -> dict[str, Any]:
    import torch

    return {
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "available": torch.cuda.is_available(),
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
        "device": torch.cuda.get_device_name(0),
    }


def _vllm() -> dict[str, Any]:
    import vllm
    from vllm.platforms import current_platform

    return {
        "version": vllm.__version__,
        "platform": type(current_platform).__name__,
        "device": current_platform.get_device_name(0),
    }


def _attention_backend(model: Any) -> str:
    """The attention backend vLLM's selector picks for gpt-oss's layers (64-dim heads with sinks, bfloat16)
    on this GPU, asked without loading a model. The selector's arguments differ between releases: those
    it takes are passed, by name."""
    import inspect

    import torch
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.v1.attention import selector

    wanted = {
        "head_size": model["head_dim"], "dtype": torch.bfloat16, "kv_cache_dtype": "auto",
        "block_size": 16, "use_mla": False, "has_sink": True, "has_sliding_window": False,
        "num_heads": model["num_attention_heads"],
    }  # fmt: skip
    params = inspect.signature(selector.get_attn_backend).parameters
    # vLLM 0.26's selector reads the current engine config (its block size, attention overrides): a default
    # config, as vLLM's own benchmarks set one up around a kernel, is an engine with no overrides.
    with set_current_vllm_config(VllmConfig()):
        backend = selector.get_attn_backend(**{k: v for k, v in wanted.items() if k in params})
    return backend.get_name() if hasattr(backend, "get_name") else getattr(backend, "__name__", str(backend))


def probe(model: dict[str, Any]) -> dict[str, Any]:
    """In the container, on the GPU: driver, CUDA, torch, vLLM and the attention backend vLLM would pick.

    The MXFP4 MoE backend is chosen when a layer is built, from the model's quantisation config: it is not
    asked here (that would load the model); the planner's expectation is printed beside what was learned.
    """
    import os
    import platform

    fact: dict[str, Any] = {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0))}
    _attempt(fact, "gpu", _nvidia_smi)
    _attempt(fact, "torch", _torch)
    _attempt(fact, "vllm", _vllm)
    _attempt(fact, "attention_backend", lambda: _attention_backend(model))
    return fact


def remote_checks(fact: dict[str, Any]) -> list[dict[str, Any]]:
    gpu, torch = fact.get("gpu") or {}, fact.get("torch") or {}
    driver = gpu.get("driver", "")
    major = int(driver.split(".")[0]) if driver.split(".")[0].isdigit() else 0
    return [
        {
            "check": f"NVIDIA driver {driver or 'unknown'} >= {MIN_DRIVER} (CUDA 13)",
            "ok": major >= MIN_DRIVER,
        },
        {"check": "torch sees the GPU", "ok": bool(torch.get("available"))},
        {"check": "vLLM imports", "ok": fact.get("vllm") is not None},
    ]


def render_remote(fact: dict[str, Any], expected: dict[str, str]) -> str:
    """What `doctor --remote` learned, as aligned text; `expected` is the planner's kernels for the GPU."""
    gpu, torch, vllm = fact.get("gpu") or {}, fact.get("torch") or {}, fact.get("vllm") or {}
    rows: list[tuple[str, str]] = [
        ("gpu", f"{gpu.get('name', '?')} x{gpu.get('count', '?')}, {gpu.get('memory', '?')}" if gpu else "?"),
        ("driver", gpu.get("driver", "?")),
        (
            "torch",
            f"{torch.get('version')} (CUDA {torch.get('cuda')}, SM {torch.get('capability')})"
            if torch
            else "?",
        ),
        ("vllm", f"{vllm.get('version')} on {vllm.get('platform')}" if vllm else "?"),
        ("attention", f"{fact.get('attention_backend') or '?'} (planner: {expected['attention']})"),
        ("mxfp4 moe", f"chosen when the model loads (planner: {expected['moe']})"),
        ("cpus", f"{fact.get('cpus')} granted, Python {fact.get('python')}"),
    ]
    rows += [
        ("error" if i == 0 else "", f"{k}: {v}") for i, (k, v) in enumerate(fact.get("errors", {}).items())
    ]
    rows += [
        ("checks" if i == 0 else "", f"{'ok ' if c['ok'] else 'FAIL'} {c['check']}")
        for i, c in enumerate(remote_checks(fact))
    ]
    width = max(len(label) for label, _ in rows) + 2
    return "\n".join(f"{label:<{width}}{value}" for label, value in rows)
