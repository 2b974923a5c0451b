"""The Modal container image, as data: base image, Python, the locked environment, its environment variables.

`image_spec(cfg, env)` says what the image is; `build_image(spec)` turns that into a `modal.Image`. The app
(`modal_app`) builds its image this way, and `gpt-oss-modal doctor` prints the same spec without calling Modal.

**The lock.** The container's Python environment is a committed lock file per vLLM release,
`locks/container-vllm-<version>.txt`: every package of the environment pinned, with hashes, resolved for the
container's Python and platform by `scripts/lock_image.py` (uv). The image installs exactly that file with
`--require-hashes`, so two builds months apart get the same bytes. Its header records its inputs (vLLM
release, the container's own requirements, Python, platform); a lock whose inputs differ from this module's
is stale, and a config whose `vllm_version` has no lock cannot be deployed.

**The base image.** vLLM 0.26 pins torch 2.11.0, whose PyPI wheels are built for CUDA 13.0 (they depend on
`cuda-toolkit==13.0.2`), so the base is CUDA 13.0.2 too. It is the *devel* flavour because start-up
JIT-compiles FlashInfer kernels with nvcc on some GPUs: on Blackwell (B200) vLLM picks FlashInfer for gpt-oss's
attention and its TRT-LLM MXFP4 MoE, and with tensor parallelism on Hopper or Blackwell its compiled mode
fuses all-reduce + RMSNorm with FlashInfer's communication kernels. flashinfer-python ships sources, not
compiled kernels (`flashinfer-jit-cache` is not on PyPI), so these compile at the first start, and the
TRT-LLM cubins download at first use (no `flashinfer-cubin` 0.6.14 on PyPI); both land in the cache volume. Triton kernels (the MXFP4 MoE on Hopper, attention below Hopper) need no toolkit: Triton
ships its own ptxas. CUDA 13 needs an NVIDIA driver >= 580 on the host.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from gpt_oss_modal.core.config import ConfigError, DeployConfig

# The base: CUDA equal to torch's (see the module docstring), with nvcc for FlashInfer's JIT.
BASE_IMAGE = "nvidia/cuda:13.0.2-devel-ubuntu24.04"
PYTHON_VERSION = "3.12"
# What the lock is resolved for: the container's interpreter and platform, whatever machine runs
# scripts/lock_image.py. The base is Ubuntu 24.04, glibc 2.39: every manylinux wheel up to 2_39 runs on it
# (llguidance, for one, ships only a 2_31 wheel), and nothing newer does.
PLATFORM = "x86_64-manylinux_2_39"
# Wheels only, when the lock is resolved and when the image installs it: a package with no wheel for the
# platform fails the resolution on the developer's machine, instead of compiling from source in the image
# build (slowly, and only if the build happens to have the compiler and headers it needs).
ONLY_BINARY = "--only-binary :all:"

# Besides vLLM, the container needs only what the package's container-side modules import (config, engine,
# planner, catalog, auth): pydantic and pydantic-settings, at the floors pyproject.toml sets.
CONTAINER_REQUIREMENTS = ("pydantic>=2.12", "pydantic-settings>=2.10")

# The package the container imports the app from, mounted at container start (editing it rebuilds nothing).
PACKAGE = "gpt_oss_modal"

LOCK_DIR = Path(__file__).resolve().parent / "locks"
LOCK_SCRIPT = "scripts/lock_image.py"

_HEADER = re.compile(r"^# ([a-z0-9-]+): (.+)$")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def lock_path(vllm_version: str) -> Path:
    return LOCK_DIR / f"container-vllm-{vllm_version}.txt"


def requirements(vllm_version: str) -> list[str]:
    """What the lock is resolved from: vLLM itself plus the container's own requirements."""
    return [f"vllm=={vllm_version}", *CONTAINER_REQUIREMENTS]


def inputs_digest(vllm_version: str) -> str:
    """sha256 over everything the lock is resolved from; a lock recording another digest is stale."""
    lines = [*requirements(vllm_version), f"python=={PYTHON_VERSION}", f"platform=={PLATFORM}", ONLY_BINARY]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@dataclass(frozen=True)
class Lock:
    path: Path
    header: dict[str, str]  # the `# key: value` lines at the top, as the script wrote them
    pins: dict[str, str]  # every package, normalised name -> exact version
    hashed: set[str]  # packages with at least one --hash
    sha256: str  # of the whole file: what the image installs

    @property
    def vllm_version(self) -> str:
        return self.header.get("vllm-version", "")

    @property
    def torch_cuda(self) -> str | None:
        """The CUDA release torch's wheels are built for, from the CUDA packages torch pulls in."""
        if "cuda-toolkit" in self.pins:  # torch >= 2.9 on CUDA 13
            return self.pins["cuda-toolkit"]
        for name in ("nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu11"):
            if name in self.pins:
                return self.pins[name]
        return None


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> Lock:
    text = path.read_text()
    header: dict[str, str] = {}
    pins: dict[str, str] = {}
    hashed: set[str] = set()
    current = None
    for line in text.splitlines():
        if m := _HEADER.match(line):
            header.setdefault(m.group(1), m.group(2).strip())
        elif m := _PIN.match(line):
            current = normalise(m.group(1))
            pins[current] = m.group(2)
        if current and "--hash=sha256:" in line:
            hashed.add(current)
    return Lock(path, header, pins, hashed, hashlib.sha256(text.encode()).hexdigest())


def lock_problem(vllm_version: str) -> str | None:
    """None when the lock for vllm_version exists and is current; else one line saying how to fix it."""
    path = lock_path(vllm_version)
    fix = f"run `python {LOCK_SCRIPT} --vllm-version {vllm_version}`"
    if not path.exists():
        known = ", ".join(sorted(p.stem.removeprefix("container-vllm-") for p in LOCK_DIR.glob("*.txt")))
        return (
            f"vllm_version: no image lock for vLLM {vllm_version} ({fix}, or use {known or 'a locked one'})"
        )
    lock = read_lock(path)
    if lock.vllm_version != vllm_version or lock.header.get("inputs-sha256") != inputs_digest(vllm_version):
        return f"vllm_version: the image lock {path.name} is stale against the container requirements ({fix})"
    return None


def base_cuda(base: str = BASE_IMAGE) -> str:
    """The CUDA release of an nvidia/cuda tag, e.g. 13.0.2."""
    m = re.search(r":(\d+\.\d+(?:\.\d+)?)-", base)
    if not m:
        raise ValueError(f"{base} is not an nvidia/cuda:<version>-... image")
    return m.group(1)


@dataclass(frozen=True)
class ImageSpec:
    base: str
    python: str
    lock: Lock
    env: dict[str, str] = field(default_factory=dict)
    package: str = PACKAGE

    @property
    def cuda(self) -> str:
        return base_cuda(self.base)

    @property
    def uv_version(self) -> str | None:
        """The uv that resolved the lock installs it too (Modal copies it from uv's own image)."""
        return self.lock.header.get("uv")

    def to_dict(self) -> dict:
        return {
            "base": self.base,
            "cuda": self.cuda,
            "python": self.python,
            "lock": {
                "path": str(self.lock.path),
                "sha256": self.lock.sha256,
                "vllm": self.lock.vllm_version,
                "torch": self.lock.pins.get("torch"),
                "torch_cuda": self.lock.torch_cuda,
                "packages": len(self.lock.pins),
                "inputs": requirements(self.lock.vllm_version),
                "platform": self.lock.header.get("platform"),
                "uv": self.uv_version,
            },
            # Modal's uv_pip_install always byte-compiles (it adds --compile-bytecode), so no container
            # compiles the packages' sources as it imports them.
            "install": (
                f"uv pip install --compile-bytecode --require-hashes {ONLY_BINARY} --requirements {self.lock.path.name}"
            ),
            "env": dict(sorted(self.env.items())),
            "package": self.package,
        }


def image_spec(cfg: DeployConfig, env: dict[str, str]) -> ImageSpec:
    """The image for cfg, with env set on it; ConfigError when its vLLM release has no current lock."""
    problem = lock_problem(cfg.vllm_version)
    if problem:
        raise ConfigError(problem)
    return ImageSpec(BASE_IMAGE, PYTHON_VERSION, read_lock(lock_path(cfg.vllm_version)), dict(env))


def build_image(spec: ImageSpec):
    """The modal.Image for spec: base + Python, the lock installed exactly, the environment, the package."""
    from modal.file_pattern_matcher import FilePatternMatcher

    import modal

    return (
        modal.Image.from_registry(spec.base, add_python=spec.python)
        .entrypoint([])  # the CUDA image's entrypoint prints a banner; Modal's own must run the function
        .uv_pip_install(
            requirements=[str(spec.lock.path)],
            # every package pinned and hashed, and a wheel, or the build fails
            extra_options=f"--require-hashes {ONLY_BINARY}",
            uv_version=spec.uv_version,
        )
        .env(spec.env)
        # The container imports modal_app, which reads the lock again (to describe the same image): ship
        # the locks with the Python files.
        .add_local_python_source(spec.package, ignore=~FilePatternMatcher("**/*.py", "**/locks/*.txt"))
    )
