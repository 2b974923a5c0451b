"""The container image: the lock it installs, the base it builds on, the caches and switches it sets.

Read from the real Modal image object the app defines (its layers' Dockerfile commands and build context,
as Modal would send them; no network, no token) and from `gpt-oss-modal doctor`, which must describe the
same image. The lock itself is checked against its inputs: a stale lock fails here, not in a container.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest

modal = pytest.importorskip("modal")

from modal._image import ImageBuilderVersion  # noqa: E402
from modal._utils.async_utils import synchronizer  # noqa: E402

from gpt_oss_modal.core import catalog, engine  # noqa: E402
from gpt_oss_modal.core.config import ConfigError, DeployConfig, load_config  # noqa: E402
from gpt_oss_modal.deploy import doctor, image, modal_ops  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VLLM = DeployConfig().vllm_version
BUILDER_VERSION = [v for v in typing.get_args(ImageBuilderVersion) if v != "PREVIEW"][-1]
EXE = shutil.which("gpt-oss-modal") or ""


# --- the lock ---------------------------------------------------------------------------------------------


def test_the_configured_vllm_release_has_a_current_lock() -> None:
    assert image.lock_problem(DEFAULT_VLLM) is None
    lock = image.read_lock(image.lock_path(DEFAULT_VLLM))
    assert lock.pins["vllm"] == DEFAULT_VLLM


@pytest.mark.parametrize("path", sorted(image.LOCK_DIR.glob("*.txt")), ids=lambda p: p.name)
def test_every_committed_lock_matches_its_inputs(path: Path) -> None:
    """Stale against vllm_version or the container requirements: rerun scripts/lock_image.py."""
    lock = image.read_lock(path)
    version = path.stem.removeprefix("container-vllm-")
    assert lock.vllm_version == version == lock.pins["vllm"]
    assert lock.header["inputs-sha256"] == image.inputs_digest(version), (
        f"{path.name} is stale: python {image.LOCK_SCRIPT} --vllm-version {version}"
    )
    assert lock.header["requirements"] == ", ".join(image.requirements(version))
    assert (lock.header["python"], lock.header["platform"]) == (image.PYTHON_VERSION, image.PLATFORM)


def test_every_package_is_pinned_exactly_with_hashes() -> None:
    lock = image.read_lock(image.lock_path(DEFAULT_VLLM))
    requirement_lines = [
        line for line in lock.path.read_text().splitlines() if line and not line.startswith((" ", "#"))
    ]
    assert len(requirement_lines) == len(lock.pins) > 100
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9._-]*==\S+ \\", line) for line in requirement_lines)
    assert lock.hashed == set(lock.pins)
    for name in ("torch", "triton", "flashinfer-python", "transformers", "pydantic", "pydantic-settings"):
        assert name in lock.pins


def test_the_lock_script_writes_the_header_the_committed_lock_has() -> None:
    """scripts/lock_image.py and gpt_oss_modal.deploy.image agree on the inputs (resolving needs the index: not here)."""
    spec = importlib.util.spec_from_file_location("lock_image", ROOT / image.LOCK_SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    lock = image.lock_path(DEFAULT_VLLM)
    uv = image.read_lock(lock).header["uv"]
    assert lock.read_text().startswith(script.header(DEFAULT_VLLM, uv))


def test_container_requirements_follow_pyproject() -> None:
    """The container's own requirements are the package's, at the floors pyproject.toml declares."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in image.CONTAINER_REQUIREMENTS:
        assert requirement in declared


CONTAINER_IMPORTS = """
import importlib.metadata as md, json, sys
import gpt_oss_modal.server.auth, gpt_oss_modal.core.catalog, gpt_oss_modal.core.config, gpt_oss_modal.core.engine
import gpt_oss_modal.deploy.image, gpt_oss_modal.core.planner, gpt_oss_modal.deploy.weights, gpt_oss_modal.deploy.doctor
tops = {name.split(".")[0] for name in sys.modules} - set(sys.stdlib_module_names) - {"gpt_oss_modal"}
dists = md.packages_distributions()
def where(top):  # a module no distribution claims: fine unless it was installed (lives in site-packages)
    path = getattr(sys.modules[top], "__file__", None) or ""
    return ["unclaimed:" + top] if "-packages" in path else []
print(json.dumps(sorted({d for top in tops for d in dists.get(top) or where(top)})))
"""


def test_everything_the_container_code_imports_is_in_the_lock() -> None:
    """The modules that run in the container import nothing the lock does not install."""
    r = subprocess.run([sys.executable, "-c", CONTAINER_IMPORTS], capture_output=True, text=True, check=True)
    imported = {image.normalise(d) for d in json.loads(r.stdout)}
    assert {"pydantic", "pydantic-settings"} <= imported
    assert imported <= set(image.read_lock(image.lock_path(DEFAULT_VLLM)).pins)


def test_a_release_without_a_lock_cannot_be_deployed() -> None:
    cfg = load_config({"vllm_version": "0.99.0"}).config
    with pytest.raises(
        ConfigError, match=r"no image lock for vLLM 0\.99\.0 .*lock_image\.py --vllm-version 0\.99\.0"
    ):
        modal_ops.check_deployable(cfg)
    with pytest.raises(ConfigError):
        image.image_spec(cfg, env={})


def test_a_stale_lock_cannot_be_deployed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    current = image.lock_path(DEFAULT_VLLM).read_text()
    monkeypatch.setattr(image, "LOCK_DIR", tmp_path)
    stale = current.replace(image.inputs_digest(DEFAULT_VLLM), "0" * 64)
    image.lock_path(DEFAULT_VLLM).write_text(stale)
    problem = image.lock_problem(DEFAULT_VLLM)
    assert problem and "stale" in problem and image.LOCK_SCRIPT in problem


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [EXE, *args] if EXE else [sys.executable, "-m", "gpt_oss_modal.cli", *args]
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GPT_OSS_", "MODAL_")) and k != "FAST_BOOT"
    }
    return subprocess.run(
        cmd, capture_output=True, text=True, cwd=cwd, env={**env, "HOME": str(cwd)}, timeout=60
    )


def test_deploy_refuses_a_release_without_a_lock_in_one_line(tmp_path: Path) -> None:
    r = run_cli("deploy", "--vllm-version", "0.99.0", cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no image lock for vLLM 0.99.0" in lines[0], r.stderr


# --- the real Modal image object --------------------------------------------------------------------------


def closure(function: Any) -> dict[str, Any]:
    return {n: c.cell_contents for n, c in zip(function.__code__.co_freevars, function.__closure__ or ())}


def layers(img: Any) -> list[tuple[list[str], dict[str, str], Any]]:
    """The image's layers, base first: (Dockerfile commands, build context files, mount), as Modal builds them."""
    out = []
    layer = synchronizer._translate_in(img)
    while layer is not None:
        cl = closure(layer._load)
        if "mount" in cl:  # add_local_python_source: files mounted at container start
            out.append(([], {}, cl["mount"]))
            layer = cl["base_image"]
        elif "single_layer_image" in cl:  # from_registry(..., add_python=...)
            layer = cl["single_layer_image"]
        else:
            spec = cl["dockerfile_function"](BUILDER_VERSION)
            out.append((spec.commands, dict(spec.context_files), None))
            layer = cl["base_images"].get("base")
    return out[::-1]


def web_function(mod: Any) -> Any:
    """The server class's service function, which carries the container settings."""
    return synchronizer._translate_out(synchronizer._translate_in(mod.Server)._class_service_function)


def image_spec_install(mod: Any) -> str:
    """The install line `doctor` prints for the app's image."""
    return image.image_spec(mod.cfg, env=mod.command.env).to_dict()["install"]


def image_facts(mod: Any) -> dict[str, Any]:
    """What the app's image does, read from its layers."""
    fn = web_function(mod)
    assert synchronizer._translate_in(fn)._spec.image is synchronizer._translate_in(mod.image)
    commands = [c for cmds, _, _ in layers(mod.image) for c in cmds]
    context = {k: v for _, ctx, _ in layers(mod.image) for k, v in ctx.items()}
    installs = [c for c in commands if "uv pip install" in c]
    env = dict(
        c.removeprefix("ENV ").split("=", 1) for c in commands if c.startswith("ENV ") and "TERMINFO" not in c
    )
    mounts = [m for _, _, m in layers(mod.image) if m is not None]
    shipped = {
        str(remote)
        for m in mounts
        for e in synchronizer._translate_in(m)._entries
        for _, remote in e.get_files_to_upload()
    }
    return {
        "from": [c.removeprefix("FROM ") for c in commands if c.startswith("FROM ") and c != "FROM base"],
        "commands": commands,
        "installs": installs,
        "context": context,
        "env": env,
        "shipped": shipped,
        "volumes": {path: v.name for path, v in fn.info().volumes.items()},
    }


@pytest.mark.parametrize(
    "settings",
    [{}, {"model": "120b", "gpu": "H100:2", "boot": "fast"}, {"gpu": "B200", "snapshot": "true"}],
    ids=["defaults", "120b-2xh100-fast", "20b-b200-snapshot"],
)
def test_the_app_image_installs_the_lock_on_a_base_with_torchs_cuda(load_app, settings: dict) -> None:
    mod = load_app(**settings)
    facts = image_facts(mod)
    lock = image.read_lock(image.lock_path(mod.cfg.vllm_version))

    # One base: CUDA's devel image, whose CUDA major (and here: release) is the one torch's wheels are built for.
    assert facts["from"] == [image.BASE_IMAGE]
    base_cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-devel-", facts["from"][0])
    assert base_cuda and lock.torch_cuda
    assert base_cuda.group(1) == lock.torch_cuda.split(".")[0] == "13"
    assert ".".join(base_cuda.groups()) == lock.torch_cuda  # torch 2.11.0 depends on cuda-toolkit 13.0.2

    # One install, of the lock file and nothing else, refusing anything without a matching hash.
    [install] = facts["installs"]
    assert "--require-hashes" in install
    # Byte-compiled at build: no container compiles the modules of vLLM, torch and the rest as it imports them.
    assert "--compile-bytecode" in install and "--compile-bytecode" in image_spec_install(mod)
    args = install.split(" --requirements ")
    assert len(args) == 2 and args[1] == f"/.uv/0/{lock.path.name}"  # no loose package after it
    assert {Path(p).resolve() for p in facts["context"].values()} == {lock.path}
    assert hashlib.sha256(Path(*facts["context"].values()).read_bytes()).hexdigest() == lock.sha256
    assert f"COPY --from=ghcr.io/astral-sh/uv:{lock.header['uv']} /uv /.uv/uv" in facts["commands"]

    # The environment: the engine command's, the FlashInfer sampler switched off, every cache on a volume.
    assert facts["env"] == {k: re.sub(r"^'(.*)'$", r"\1", v) for k, v in mod.command.env.items()}
    assert facts["env"]["VLLM_USE_FLASHINFER_SAMPLER"] == "0"
    assert facts["volumes"] == {engine.HF_CACHE_DIR: "huggingface-cache", engine.VLLM_CACHE_DIR: "vllm-cache"}
    for key in (*engine.COMPILE_CACHE_ENV, "HF_HOME", "FLASHINFER_WORKSPACE_BASE"):
        path = facts["env"][key]
        assert any(path == m or path.startswith(m + "/") for m in facts["volumes"]), (key, path)

    # The package, with the lock it describes itself by, mounted at container start.
    assert f"/root/gpt_oss_modal/deploy/locks/{lock.path.name}" in facts["shipped"]
    assert "/root/gpt_oss_modal/modal_app.py" in facts["shipped"]


def test_catalog_pins_a_revision_for_every_model() -> None:
    for model in catalog.MODELS.values():
        assert re.fullmatch(r"[0-9a-f]{40}", model.revision), model.id
    assert catalog.MODELS["openai/gpt-oss-20b"].revision == "d666cf3b67006cf8227666739edf25164aaffdeb"


# --- doctor: the same facts, for users -------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings", [{}, {"model": "120b", "gpu": "H100:2"}], ids=["defaults", "120b-2xh100"]
)
def test_doctor_describes_the_image_the_app_builds(load_app, tmp_path: Path, settings: dict) -> None:
    flags = [arg for key, value in settings.items() for arg in (f"--{key}", value)]
    r = run_cli("doctor", "--json", *flags, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    mod = load_app(**settings)
    facts = image_facts(mod)
    lock_file = Path(*facts["context"].values())

    assert report["image"]["base"] == facts["from"][0]
    assert report["image"]["lock"]["sha256"] == hashlib.sha256(lock_file.read_bytes()).hexdigest()
    assert Path(report["image"]["lock"]["path"]).name == lock_file.name
    assert report["image"]["lock"]["torch_cuda"].split(".")[0] == report["image"]["cuda"].split(".")[0]
    assert report["image"]["env"] == facts["env"]
    assert {v["mount"]: v["name"] for v in report["volumes"]} == facts["volumes"]
    assert {c["env"]: c["volume"] for c in report["caches"]} == {
        k: doctor.volume_of(v) for k, v in facts["env"].items() if v.startswith("/")
    }
    assert report["command"]["argv"] == mod.command.argv
    assert report["model"] == {"id": mod.cfg.model, "revision": mod.cfg.model_info.revision}
    assert all(check["ok"] for check in report["checks"]), report["checks"]


def test_doctor_prints_the_same_for_people(tmp_path: Path) -> None:
    r = run_cli("doctor", "--model", "120b", "--gpu", "H200", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lock = image.read_lock(image.lock_path(DEFAULT_VLLM))
    for text in (
        image.BASE_IMAGE,
        lock.sha256,
        catalog.MODELS["openai/gpt-oss-120b"].revision,
        "vllm-cache at",
    ):
        assert text in r.stdout
    assert "FAIL" not in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--model", "tiny"], "local CPU engine only"), (["--vllm-version", "0.99.0"], "no image lock")],
)
def test_doctor_refuses_what_cannot_deploy_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    r = run_cli("doctor", *args, cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


# --- the docs say what the image does -------------------------------------------------------------------


def test_cold_start_doc_and_readme_agree_with_the_image() -> None:
    cold_start = (ROOT / "docs" / "cold-start.md").read_text()
    readme = (ROOT / "README.md").read_text()
    cfg = DeployConfig()
    env = engine.build_command(cfg, target="modal").env
    for key, path in engine.COMPILE_CACHE_ENV.items():
        row = f"| `{key}` | `{path}` | `{engine.VLLM_CACHE.name}` |"
        assert row in cold_start, row
    assert f"| `HF_HOME` | `{env['HF_HOME']}` | `{engine.HF_CACHE.name}` |" in cold_start
    assert "VLLM_USE_FLASHINFER_SAMPLER=0" in cold_start and env["VLLM_USE_FLASHINFER_SAMPLER"] == "0"
    for doc in (cold_start, readme):
        assert image.BASE_IMAGE in doc
        assert f"python {image.LOCK_SCRIPT} --vllm-version" in doc
    assert "driver >= 580" in cold_start
