"""Resources a task asks for, and accelerator devices, validated as the Flyte SDK does: quantities
are Kubernetes strings (`"1Gi"`), cpu may be a number, accelerators are `"<device>:<count>"` from
the known list, partitions belong to their device. They travel with their environments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DeviceClass = Literal["GPU", "TPU", "NEURON", "AMD_GPU", "HABANA_GAUDI", "APPLE_SILICON"]

GPU_TYPES = (
    "A2", "A10", "A10G", "A100", "A100_80G", "B200", "H100", "H200", "L4", "L40s", "T4", "V100",
    "RTX_PRO_4500", "RTX_PRO_6000", "GB10",
)  # fmt: skip
SHARED_GPU_TYPES = ("T4 shared", "L4 shared", "A10G shared", "A10 shared", "L40S shared")
GPU_PARTITIONS: dict[str, tuple[str, ...]] = {
    "A100": ("1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"),
    "A100_80G": ("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H100": ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H200": ("1g.18gb", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"),
    "RTX_PRO_6000": ("1g.24gb", "2g.48gb", "4g.96gb"),
}
TPU_TYPES = ("V5E", "V5P", "V6E")
TPU_PARTITIONS_2D = ("1x1", "2x2", "2x4", "4x4", "4x8", "8x8", "8x16", "16x16")
TPU_PARTITIONS_3D = (
    "2x2x1", "2x2x2", "2x4x4", "4x4x4", "4x4x8", "4x8x8", "8x8x8", "8x8x16", "8x16x16", "16x16x16", "16x16x24",
)  # fmt: skip
TPU_PARTITIONS = {"V5E": TPU_PARTITIONS_2D, "V6E": TPU_PARTITIONS_2D, "V5P": TPU_PARTITIONS_3D}
NEURON_TYPES = ("Inf1", "Inf2", "Trn1", "Trn1n", "Trn2", "Trn2u")
AMD_GPU_TYPES = ("MI100", "MI210", "MI250", "MI250X", "MI300A", "MI300X", "MI325X", "MI350X", "MI355X")
HABANA_GAUDI_TYPES = ("Gaudi1",)
_ALIASES = {"A100 80G": "A100_80G", "RTX PRO 6000": "RTX_PRO_6000"}  # older spellings


def _accelerators() -> frozenset[str]:
    names = {
        f"{g}:{n}" for g in GPU_TYPES if g not in ("A2", "RTX_PRO_4500", "RTX_PRO_6000", "GB10") for n in range(1, 9)
    }
    names |= {"A2:1", "RTX_PRO_4500:1", "RTX_PRO_6000:1", "RTX_PRO_6000:2", "GB10:1"}
    names |= {f"{s}:1" for s in SHARED_GPU_TYPES}
    names |= {f"{t}:{n}" for t in ("Trn1", "Trn1n", "Trn2", "Trn2u") for n in (1, 4, 8, 16)}
    names |= {f"Inf1:{n}" for n in range(1, 17)} | {f"Inf2:{n}" for n in range(1, 13)}
    names |= {f"{m}:1" for m in AMD_GPU_TYPES} | {"Gaudi1:1", "AppleSilicon", "AppleSilicon:1"}
    return frozenset(names)


ACCELERATORS = _accelerators()


def _one_of(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"Invalid {what}: {value!r}. Must be one of {allowed}")


@dataclass(frozen=True)
class Device:
    """A device type, its quantity and partition, if any."""

    quantity: int
    device_class: DeviceClass
    device: str | None = None
    partition: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.quantity, int) or self.quantity < 1:
            raise ValueError(f"Device quantity must be an int of at least 1, got {self.quantity!r}")


def GPU(device: str, quantity: int, partition: str | None = None) -> Device:
    """A GPU device, e.g. GPU("A100", 2) or GPU("A100", 1, partition="1g.5gb")."""
    device = _ALIASES.get(device, device)
    _one_of("GPU type", device, GPU_TYPES + SHARED_GPU_TYPES)
    if partition is not None:
        if device in SHARED_GPU_TYPES:
            raise ValueError(f"A shared GPU takes no partition, got {partition!r} for {device}")
        _one_of(f"partition for {device}", partition, GPU_PARTITIONS.get(device, ()))
    return Device(quantity=quantity, device_class="GPU", device=device, partition=partition)


def TPU(device: str, partition: str | None = None) -> Device:
    """A TPU device, e.g. TPU("V5P", "2x2x1")."""
    _one_of("TPU type", device, TPU_TYPES)
    if partition is not None:
        _one_of(f"partition for {device}", partition, TPU_PARTITIONS[device])
    return Device(quantity=1, device_class="TPU", device=device, partition=partition)


def Neuron(device: str) -> Device:
    _one_of("Neuron type", device, NEURON_TYPES)
    return Device(quantity=1, device_class="NEURON", device=device)


def AMD_GPU(device: str) -> Device:
    _one_of("AMD GPU type", device, AMD_GPU_TYPES)
    return Device(quantity=1, device_class="AMD_GPU", device=device)


def HABANA_GAUDI(device: str) -> Device:
    _one_of("Habana Gaudi type", device, HABANA_GAUDI_TYPES)
    return Device(quantity=1, device_class="HABANA_GAUDI", device=device)


CPUValue = int | float | str


def _quantity(name: str, value: object, pair: bool = False, required: bool = False) -> None:
    if value is None:
        if required:
            raise ValueError(f"{name} pair elements must both be set, got None")
        return
    if pair and isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"{name} tuple must have exactly two elements")
        for element in value:
            _quantity(name, element, required=True)
        return
    if name == "cpu":
        if not isinstance(value, (int, float, str)) or isinstance(value, bool):
            raise ValueError(f"cpu must be a core count or a quantity string such as 1, 0.5 or '100m', got {value!r}")
        if isinstance(value, (int, float)) and value < 0:
            raise ValueError("cpu must be greater than or equal to 0")
    elif not isinstance(value, str):
        raise ValueError(f"{name} must be a Kubernetes quantity string such as '1Gi', '512Mi' or '2G', got {value!r}")


@dataclass(frozen=True)
class Resources:
    """CPU, memory, accelerators, disk and shared memory for a task.

    Example: Resources(cpu=(1, 2), memory="2Gi", gpu="A100:8", disk="10Gi")
    """

    cpu: CPUValue | tuple[CPUValue, CPUValue] | None = None
    memory: str | tuple[str, str] | None = None
    gpu: str | int | Device | None = None
    disk: str | None = None
    shm: str | Literal["auto"] | None = None

    def __post_init__(self) -> None:
        _quantity("cpu", self.cpu, pair=True)
        _quantity("memory", self.memory, pair=True)
        _quantity("disk", self.disk)
        _quantity("shm", self.shm)
        gpu = self.gpu
        if gpu is None or isinstance(gpu, Device):
            return
        if isinstance(gpu, bool) or not isinstance(gpu, (int, str)):
            raise ValueError(f"gpu must be an accelerator string such as 'A100:4', a count, or a Device, got {gpu!r}")
        if isinstance(gpu, int):
            if gpu < 0:
                raise ValueError("gpu must be greater than or equal to 0")
            return
        device, sep, count = gpu.partition(":")
        normalised = f"{_ALIASES.get(device, device)}{sep}{count}"
        if normalised not in ACCELERATORS:
            raise ValueError(f"gpu must be an accelerator such as 'A100:4' or 'T4:1', got {gpu!r}")
        object.__setattr__(self, "gpu", normalised)

    def get_device(self) -> Device | None:
        """The accelerator device for the task, or None."""
        gpu = self.gpu
        if gpu is None or gpu == 0:
            return None
        if isinstance(gpu, Device):
            return gpu
        if isinstance(gpu, int):
            return Device(quantity=gpu, device_class="GPU")
        device, _, count = gpu.partition(":")
        quantity = int(count or 1)
        for cls, names in (
            ("NEURON", NEURON_TYPES), ("AMD_GPU", AMD_GPU_TYPES), ("HABANA_GAUDI", HABANA_GAUDI_TYPES),
            ("APPLE_SILICON", ("AppleSilicon",)),
        ):  # fmt: skip
            if device in names:
                return Device(quantity=quantity, device_class=cls, device=device)  # type: ignore[arg-type]
        return Device(quantity=quantity, device_class="GPU", device=device)

    def get_shared_memory(self) -> str | None:
        """The shared memory size ("auto" is the node's maximum), or None."""
        return self.shm
