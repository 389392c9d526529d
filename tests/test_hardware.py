"""compressors/machine/hardware.py: tiers from simulated CUDA devices, skip reasons, --device, CPU features."""

from __future__ import annotations

import json
import types

import pytest

from compressors.machine import hardware
from compressors.machine.hardware import (
    CpuInfo,
    DeviceChoice,
    DeviceError,
    parse_device,
    probe_hardware,
    read_cpu_info,
    tier_for_capability,
)
from tests import cpus

CPU = CpuInfo("Test CPU", 2, 4, 4, ("avx2",))

# name, compute capability, memory: what torch.cuda.get_device_properties reports for real cards.
T4 = ("Tesla T4", (7, 5), 15_843_721_216)
H100 = ("NVIDIA H100 80GB HBM3", (9, 0), 85_031_714_816)
GTX1050TI = ("NVIDIA GeForce GTX 1050 Ti", (6, 1), 4_236_312_576)


class FakeCuda:
    """The torch.cuda queries hardware.probe_hardware makes, answering for a list of cards."""

    def __init__(self, cards, available=True):
        self.cards, self.available = cards, available

    def is_available(self):
        return self.available and bool(self.cards)

    def device_count(self):
        return len(self.cards)

    def get_device_properties(self, index):
        name, (major, minor), memory = self.cards[index]
        return types.SimpleNamespace(name=name, major=major, minor=minor, total_memory=memory)

    def get_device_capability(self, index):
        return self.cards[index][1]


class FakeNvml:
    def __init__(self, driver="550.54.15", fail_init=None):
        self.driver, self.fail_init, self.calls = driver, fail_init, []

    def nvmlInit(self):
        self.calls.append("init")
        if self.fail_init:
            raise RuntimeError(self.fail_init)

    def nvmlSystemGetDriverVersion(self):
        return self.driver

    def nvmlShutdown(self):
        self.calls.append("shutdown")


def machine(*cards, torch_cuda="12.8", nvml=None):
    return probe_hardware(FakeCuda(list(cards)), torch_cuda, nvml or FakeNvml(), cpu=CPU)


@pytest.mark.parametrize("capability, tier", [
    ((7, 5), "t4"),  # T4: the boundary itself
    ((8, 0), "t4"),  # A100
    ((9, 0), "t4"),  # H100
    ((8, 6), "t4"),  # RTX 30xx
    ((7, 0), "legacy_gpu"),  # V100: older than 7.5
    ((6, 1), "legacy_gpu"),  # GTX 1050 Ti
    ((3, 7), "legacy_gpu"),  # K80
])
def test_tier_for_capability(capability, tier):
    assert tier_for_capability(capability) == tier


@pytest.mark.parametrize("cards, tiers", [
    ((), ("cpu",)),
    ((T4,), ("cpu", "t4")),
    ((H100,), ("cpu", "t4")),
    ((GTX1050TI,), ("cpu", "legacy_gpu")),
    ((GTX1050TI, T4), ("cpu", "t4", "legacy_gpu")),
])
def test_tiers_present_follow_the_devices_found(cards, tiers):
    assert machine(*cards).tiers == tiers


def test_gpu_details_and_driver_are_recorded():
    nvml = FakeNvml(driver=b"470.256.02")  # older nvidia-ml-py returns bytes
    info = machine(GTX1050TI, T4, nvml=nvml)
    assert [(g.index, g.name, g.capability, g.tier) for g in info.gpus] == [
        (0, "NVIDIA GeForce GTX 1050 Ti", (6, 1), "legacy_gpu"), (1, "Tesla T4", (7, 5), "t4")]
    assert info.cuda.driver_version == "470.256.02" and nvml.calls == ["init", "shutdown"]
    as_dict = json.loads(json.dumps(info.to_dict()))  # what machine_info saves
    assert as_dict["gpus"][1] == {"index": 1, "name": "Tesla T4", "capability": [7, 5],
                                  "total_memory_bytes": 15_843_721_216, "tier": "t4"}
    assert as_dict["cuda"] == {"torch_cuda": "12.8", "available": True, "driver_version": "470.256.02", "note": None}
    assert as_dict["tiers"] == ["cpu", "t4", "legacy_gpu"]


def test_missing_nvml_or_driver_leaves_a_note_not_an_error():
    no_module = probe_hardware(FakeCuda([T4]), "12.8", None, cpu=CPU)
    assert no_module.cuda.driver_version is None and "nvidia-ml-py not installed" in no_module.cuda.note
    failing = machine(T4, nvml=FakeNvml(fail_init="Driver Not Loaded"))
    assert failing.cuda.driver_version is None and "Driver Not Loaded" in failing.cuda.note


def test_skip_reason_names_what_was_looked_for_without_cuda():
    info = probe_hardware(FakeCuda([], available=False), None, None, cpu=CPU)  # a CPU build of torch
    assert info.missing_reason("t4") == ("t4: no NVIDIA GPU with compute capability >= 7.5 found "
                                         "(no CUDA device; torch.cuda.is_available()=False, torch built without CUDA)")
    assert info.missing_reason("legacy_gpu").startswith("legacy_gpu: no NVIDIA GPU with compute capability < 7.5 found")
    assert info.missing_reason("cpu") is None


def test_skip_reason_with_cuda_build_but_no_driver(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    info = probe_hardware(FakeCuda([], available=False), "12.8", FakeNvml(), cpu=CPU)
    reason = info.missing_reason("t4")
    assert "torch built with CUDA 12.8" in reason
    assert "no driver or no visible device (CUDA_VISIBLE_DEVICES='')" in reason


def test_skip_reason_names_the_gpu_of_the_other_tier():
    reason = machine(GTX1050TI).missing_reason("t4")
    assert reason.startswith(
        "t4: no NVIDIA GPU with compute capability >= 7.5 found (cuda:0 NVIDIA GeForce GTX 1050 Ti "
        "(compute capability 6.1, legacy_gpu)"
    )
    assert "driver 550.54.15" in reason
    assert "cuda:0 Tesla T4 (compute capability 7.5, t4)" in machine(T4).missing_reason("legacy_gpu")
    with pytest.raises(ValueError, match="unknown tier 'gpu'; valid tiers: cpu, t4, legacy_gpu"):
        machine(T4).missing_reason("gpu")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("cpu", DeviceChoice("cpu")),
        ("cuda", DeviceChoice("cuda")),
        ("cuda:1", DeviceChoice("cuda", 1)),
        (" CUDA:0 ", DeviceChoice("cuda", 0)),
    ],
)
def test_parse_device_accepts(value, expected):
    assert parse_device(value, machine(GTX1050TI, T4)) == expected


@pytest.mark.parametrize(
    "value, cards, message",
    [
        ("gpu", (T4,), "--device 'gpu' is not a device; valid: cpu, cuda, cuda:N (on this machine: cpu, cuda, cuda:0)"),
        ("cuda:x", (T4,), "--device 'cuda:x' is not a device"),
        ("cpu:0", (T4,), "--device 'cpu:0' is not a device"),
        ("cuda:2", (GTX1050TI, T4), "--device 'cuda:2': no CUDA device 2 (found cuda:0 NVIDIA GeForce GTX 1050 Ti"),
        ("cuda:2", (GTX1050TI, T4), "valid on this machine: cpu, cuda, cuda:0, cuda:1"),
        ("cuda", (), "--device 'cuda': no CUDA device found (torch.cuda.is_available()=False"),
    ],
)
def test_parse_device_rejects_with_value_and_choices(value, cards, message):
    with pytest.raises(DeviceError) as caught:
        parse_device(value, machine(*cards))
    assert message in str(caught.value)


def test_device_for_maps_tiers_to_devices_and_respects_device_option():
    both = machine(GTX1050TI, T4)
    assert both.device_for("cpu") == ("cpu", None)
    assert both.device_for("t4") == ("cuda:1", None)
    assert both.device_for("legacy_gpu") == ("cuda:0", None)
    assert both.device_for("t4", DeviceChoice("cuda")) == ("cuda:1", None)
    assert both.device_for("cpu", DeviceChoice("cuda")) == (None, "cpu: --device cuda restricts the run to CUDA")
    assert both.device_for("t4", DeviceChoice("cpu")) == (None, "t4: --device cpu restricts the run to the CPU")
    assert both.device_for("t4", DeviceChoice("cuda", 0)) == (
        None,
        "t4: --device cuda:0 selects cuda:0 NVIDIA GeForce GTX 1050 Ti (compute capability 6.1, legacy_gpu)",
    )
    assert both.device_for("legacy_gpu", DeviceChoice("cuda", 0)) == ("cuda:0", None)
    device, reason = machine().device_for("t4", DeviceChoice("cpu"))
    assert device is None and reason.startswith("t4: no NVIDIA GPU")  # absent tier: say that first


CPUINFO = {
    "brand_raw": "Intel(R) Xeon(R) Platinum 8480C",  # what py-cpuinfo reports on Linux
    "flags": ["fpu", "sse2", "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"],
}


def test_cpu_info_reads_name_and_isa_features():
    cpu = read_cpu_info(CPUINFO)
    assert cpu.name == "Intel(R) Xeon(R) Platinum 8480C"
    assert cpu.flags == ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
    assert cpu.isa == {"avx2": True, "avx512": True, "vnni": True, "avx512_bf16": True, "amx": True}
    assert cpu.threads >= cpu.usable_threads >= 1 and (cpu.physical_cores is None or cpu.physical_cores >= 1)
    old = read_cpu_info({"brand_raw": "Intel(R) Core(TM) i7-4770", "flags": ["fpu", "sse2", "avx", "avx2"]})
    assert old.isa == {"avx2": True, "avx512": False, "vnni": False, "avx512_bf16": False, "amx": False}
    client = read_cpu_info({"brand_raw": "12th Gen Intel(R) Core(TM) i7-12700", "flags": ["avx2", "avxvnni"]})  # CPUID
    assert client.isa["vnni"] and not client.isa["avx512"]


def test_hardware_cli_exits_1_when_a_required_tier_is_missing(monkeypatch, capsys):
    monkeypatch.setattr(hardware, "detect", lambda: machine(GTX1050TI))
    assert hardware.main(["--require", "legacy_gpu"]) == 0
    assert json.loads(capsys.readouterr().out)["tiers"] == ["cpu", "legacy_gpu"]
    assert hardware.main(["--require", "t4"]) == 1
    assert "required tier missing: t4: no NVIDIA GPU with compute capability >= 7.5" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kind, saturates",
    [
        (cpus.SKYLAKE_SP, True),
        (cpus.HASWELL, True),  # vpmaddubsw: int16 sums saturate
        (cpus.ZEN4, False),
        (cpus.SAPPHIRE_RAPIDS, False),
        (cpus.ALDER_LAKE, False),  # VNNI / AMX accumulate in int32
        (cpus.GRAVITON3, False),  # not x86: none of its int8 kernels take that path
    ],
)
def test_int8_dot_saturation_follows_the_isa(kind, saturates):
    cpu = read_cpu_info(kind)
    assert cpu.int8_dot_saturates is saturates, f"{cpu.name}: isa {cpu.isa}"
    flags = cpu.int8_flags()
    assert flags["cpu"] == cpu.name and flags["int8_dot_saturates"] is saturates
    assert set(flags) >= {"avx2", "avx512", "vnni", "amx"}
