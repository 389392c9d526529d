import pytest

from compressors.core.registry import Registry, RegistryError


def test_register_and_get():
    reg = Registry("thing")
    reg.register("a-1", 1)
    assert reg.get("a-1") == 1
    assert "a-1" in reg and "b" not in reg


@pytest.mark.parametrize("bad", ["Upper", "has space", "a+b", "", "-lead", "trail-"])
def test_malformed_names_fail_at_registration(bad):
    with pytest.raises(RegistryError, match="invalid thing name"):
        Registry("thing").register(bad, 1)


def test_duplicate_registration_fails():
    reg = Registry("thing")
    reg.register("x", 1)
    with pytest.raises(RegistryError, match="registered twice"):
        reg.register("x", 2)


def test_unknown_name_lists_valid_choices():
    reg = Registry("thing")
    reg.register("alpha", 1)
    reg.register_family(r"beta-(\d+)", "beta-4", lambda m: int(m.group(1)))
    with pytest.raises(RegistryError) as info:
        reg.get("gamma")
    message = str(info.value)
    assert "gamma" in message and "alpha" in message and "beta-4" in message


def test_family_builds_entry_from_name():
    reg = Registry("thing")
    reg.register_family(r"beta-(\d+)", "beta-4", lambda m: int(m.group(1)) * 10)
    assert reg.get("beta-7") == 70
    with pytest.raises(RegistryError):
        reg.register_family(r"gamma-(\d+)", "delta", lambda m: 0)


def test_real_registries_are_populated():
    from compressors.builders.models import MODELS
    from compressors.builders.techniques import TECHNIQUES

    assert {"minilm-sst2", "distilbert-sst2", "bert-base-sst2", "bert-large-sst2", "albert-base-sst2",
            "roberta-base-sst2", "smollm2-135m", "gpt2", "distilgpt2"} <= set(MODELS.names())
    assert {"fp32", "dynamic-int8", "onnx-fp32", "onnx-int8"} <= set(TECHNIQUES.names())
    for name in MODELS.names():
        spec = MODELS.get(name)
        if spec.is_hub:
            assert spec.repo_id
        if spec.is_hub and spec.task == "sequence-classification":
            assert spec.published_dev_accuracy and spec.published_source
