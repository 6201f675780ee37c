"""The one type every estimator speaks: a device's figures (a catalog GPU or this host's CPU)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Hardware:
    key: str
    label: str
    arch: str  # family, for "was a GPU like this one ever measured" (uncertainty bands)
    memory_gib: float
    bandwidth_gbs: float  # GB/s = 1e9 B/s, per device
    bf16_tflops: float
    fp16_tflops: float | None = None
    int8_tops: float | None = None
    fp8_tflops: float | None = None
    fp32_tflops: float | None = None  # CPU hosts (measured); GPUs: unset, fp32 models are rare there
    interconnect: str = "pcie4"
    link_gbs: float = 31.5  # per direction, per device
    alpha_us: float = 25.0  # assumed latency of one collective
    # GPU peer-to-peer over PCIe/NVLink; False where drivers or clouds refuse peer access
    # (GeForce 4090, AWS A10G/L4): NCCL then stages every transfer through host memory
    p2p: bool = True
    tdp_w: float | None = None
    source: str = ""
    measured: dict = field(default_factory=dict)  # CPU host: how the figures were obtained

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * 2**30

    def peak_flops(self, compute_dtype: str) -> float:
        """FLOP/s of the tensor units for a compute dtype (dense; FP32 accumulate on GeForce)."""
        tf = {"fp8": self.fp8_tflops, "int8": self.int8_tops, "fp16": self.fp16_tflops,
              "fp32": self.fp32_tflops}.get(compute_dtype)
        return (tf or self.bf16_tflops) * 1e12

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__ if k != "measured"} | (
            {"measured": self.measured} if self.measured else {})
