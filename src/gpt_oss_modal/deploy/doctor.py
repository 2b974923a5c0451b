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
