"""What one serving container reserves beside its GPUs (Modal's `cpu=` and `memory=`), and what a running one
costs per hour: its GPUs, and the cores and memory it reserves, at the catalog's list prices."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpt_oss_modal.core import catalog
from gpt_oss_modal.core.config import DeployConfig


@dataclass(frozen=True)
class Resources:
    """What one serving container reserves beside its GPUs, and what a running one costs per hour."""

    cpu: float  # physical cores
    memory_mib: int
    gpu_usd_per_hour: float
    cpu_usd_per_hour: float
    memory_usd_per_hour: float

    @property
    def usd_per_hour(self) -> float:
        return self.gpu_usd_per_hour + self.cpu_usd_per_hour + self.memory_usd_per_hour


def snapshot_memory_mib(cfg: DeployConfig) -> int | None:
    """Host memory (MiB) a snapshotted engine needs; None without snapshots.

    Sleep level 1 moves the weights into pinned host RAM (60.8 GiB for 120b), and the snapshot holds them:
    the container must have room for them next to the processes themselves.
    """
    model = cfg.model_info
    if not cfg.snapshot or model is None:
        return None
    return math.ceil((model.weights_gib + catalog.SNAPSHOT_HEADROOM_GIB) * 1024)


def container_resources(cfg: DeployConfig) -> Resources:
    """The serving container's `cpu=` and `memory=` for cfg (catalog.CONTAINER_RESOURCES, per extra GPU,
    and a snapshot's sleeping weights), and Modal's price of a running one: GPUs, cores and memory."""
    gpu, count = cfg.gpu_type, cfg.gpu_count
    base = catalog.CONTAINER_RESOURCES.get(cfg.model)
    if base is None:  # the tiny checkpoint never runs on Modal; priced as a 20b container if asked
        base = catalog.CONTAINER_RESOURCES["openai/gpt-oss-20b"]
    extra = count - 1
    cpu = base.cpu + extra * base.cpu_per_extra_gpu
    memory_mib = math.ceil((base.memory_gib + extra * base.memory_gib_per_extra_gpu) * 1024)
    memory_mib = max(memory_mib, snapshot_memory_mib(cfg) or 0)
    return Resources(
        cpu=cpu,
        memory_mib=memory_mib,
        gpu_usd_per_hour=gpu.usd_per_hour * count,
        cpu_usd_per_hour=cpu * catalog.CPU_USD_PER_CORE_HOUR,
        memory_usd_per_hour=memory_mib / 1024 * catalog.MEMORY_USD_PER_GIB_HOUR,
    )
