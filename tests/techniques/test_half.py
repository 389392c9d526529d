import numpy as np

from compressors.builders.techniques import build_chain, parse_chain
from compressors.execution.runtime import load_predictor


def test_bf16_halves_size_runs_in_bf16_and_stays_close(tiny_base, ctx, tiny_batch):
    artifact = build_chain(tiny_base, parse_chain("bf16"), ctx, "tiny")
    assert abs(artifact.weight_bytes / tiny_base.weight_bytes - 0.5) < 0.05
    assert isinstance(artifact.meta["cpu_native_bf16"], bool)
    predictor = load_predictor(artifact)
    assert predictor.placement()["parameter_dtypes"] == ["bfloat16"]
    ref = load_predictor(tiny_base)
    a, b = predictor.logits(predictor.prepare(tiny_batch)), ref.logits(ref.prepare(tiny_batch))
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 0.05


def test_fp32_artifact_still_loads_in_fp32(tiny_base):
    assert load_predictor(tiny_base).placement()["parameter_dtypes"] == ["float32"]


def test_fp16_is_skipped_on_a_cpu_only_machine_with_a_reason_where_bf16_runs():
    from bench.cases import cases
    from compressors.core.task_kinds import TASK_CLASSIFICATION
    from compressors.machine.hardware import CpuInfo, probe_hardware

    cpu_only = probe_hardware(None, None, cpu=CpuInfo("Test CPU", 2, 4, 4, ("avx2",)))

    def skip_reasons(technique):
        # the two gates a case passes: can it run on its tier at all, and is the tier on this machine
        return {(case.tier, case.batch_size): case.unsupported_reason() or cpu_only.device_for(case.tier)[1]
                for case in cases(TASK_CLASSIFICATION, ["minilm-sst2"], [technique])}

    fp16, bf16 = skip_reasons("fp16"), skip_reasons("bf16")
    assert fp16["cpu", 32] == "fp16 runs on ['cuda'], not on cpu (cpu)"
    assert all(reason for reason in fp16.values()), fp16  # not one fp16 case runs here, and each says why
    for (tier, _), reason in fp16.items():
        assert tier == "cpu" or reason.startswith(f"{tier}: no NVIDIA GPU"), reason
    assert bf16["cpu", 32] is None and bf16["t4", 32] == fp16["t4", 32]  # bf16 runs on the CPU tier
