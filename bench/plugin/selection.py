"""What the run benchmarks: ``--models`` and ``--techniques`` checked against the registries (and models given
by path or hub id read and checked, with their data), ``--device`` parsed, before collection."""

from __future__ import annotations

import dataclasses

import pytest

from bench.plugin.state import Selection, run_state


def _split(option: str, value: list[str] | None, valid: str) -> list[str] | None:
    """A comma list setting: None when not given; an empty list or a repeated name is an error."""
    if value is None:
        return None
    names = list(value)
    if not all(names):
        raise pytest.UsageError(f"{option}={','.join(value)!r} has an empty name; give a comma list of names ({valid})")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise pytest.UsageError(f"{option}={','.join(value)!r} names {', '.join(repeated)} more than once")
    return names


def check_selection(models: list | None, techniques: list[str] | None) -> None:
    """Every named model and chain exists, and every chain's parameters fit every selected model it
    applies to (``layerdrop-99`` on a 6-layer encoder), from configs read without weights. ``models``:
    registered names or :class:`~compressors.builders.models.ModelSpec` objects (models given by path)."""
    from compressors.builders.models import MODELS, ModelSpec
    from compressors.builders.techniques import ChainError, parse_chain

    for name in models or []:
        if not isinstance(name, ModelSpec) and name not in MODELS:
            raise pytest.UsageError(f"--models: unknown model {name!r}; valid models: {MODELS.describe_names()}, "
                                    "a folder (./my-model) or a hub id (hub:org/name)")
    chains = []
    for name in techniques or []:
        try:
            chains.append(parse_chain(name))
        except ChainError as exc:
            raise pytest.UsageError(f"--techniques: {exc}") from None
    for chain in chains:
        if not any(stage.layers_after for stage in chain.build_stages):
            continue
        for model in (m if isinstance(m, ModelSpec) else MODELS.get(m) for m in (models or MODELS.names())):
            layers = model.encoder_layers() if model.task in chain.tasks else None
            if layers is not None:
                try:
                    chain.check_layers(layers, model.name)
                except ChainError as exc:
                    raise pytest.UsageError(f"--techniques: {exc}") from None


def replay_names(value: list[str] | None) -> list[str] | None:
    """``--techniques @FILE``: the names in FILE (one per line, ``#`` comments), as a search wrote them
    (bench/plugin/search.py); other entries as given."""
    if value is None:
        return None
    names = []
    for entry in value:
        if not entry.startswith("@"):
            names.append(entry)
            continue
        path = entry[1:]
        try:
            lines = open(path, encoding="utf-8").read().splitlines()
        except OSError as exc:
            raise pytest.UsageError(f"--techniques {entry}: cannot read {path!r} ({exc.strerror or exc}); give the "
                                    "file a --search run wrote (its path is printed after the search)") from None
        found = [line.split("#", 1)[0].strip() for line in lines]
        found = [n for n in found if n]
        if not found:
            raise pytest.UsageError(f"--techniques {entry}: {path!r} names no technique")
        names += [n for n in found if n not in names]
    return names


def search_families(settings, techniques: list[str] | None) -> tuple[list[str] | None, list[str] | None]:
    """``(techniques, families)``: under ``--search`` the entries that name a searchable family (``layerdrop-K``)
    are the families to search, the rest techniques to benchmark as they are (only families named: the fp32
    baseline and what the search finds); without ``--search`` a family pattern is a usage error that says
    what it needs."""
    from compressors.search.space import family_named

    if techniques is None:
        return None, None
    families = [n for n in techniques if family_named(n)]
    if families and not settings.values["search"]:
        raise pytest.UsageError(f"--techniques {','.join(families)}: a family with its knob to search; add --search "
                                "--max-drop PP (or --max-ppl-rise PCT), or name one value (layerdrop-2)")
    rest = [n for n in techniques if n not in families]
    if families and not rest:
        rest = ["fp32"]
    return rest, (families or None)


def user_selection(settings, names: list[str] | None) -> tuple[list | None, dict]:
    """``(models, user_data)``: registered names stay names; a folder, a hub id (``hub:org/name``) or a model
    named in the settings table becomes a ModelSpec (compressors.builders.models.user), checked now, with its data
    (compressors.quality.taskdata.user_data) read and checked now too. Data options without such a model are an
    error."""
    from compressors import CompressbenchError
    from compressors.builders.models import MODELS
    from compressors.builders.models.user import parse_model_argument, repeated_model, user_model_spec
    from compressors.quality.taskdata import user_data

    data_options = [o for o in ("dataset", "dataset_eval", "dataset_train", "text_file", "text_file_train")
                    if settings.values[o] is not None]
    models, data, taken = [], {}, set(MODELS.names())
    seen: dict[str, str] = {}  # where each user model is (real path, hub id) -> the entry that named it first
    for name in names or []:
        named = settings.named_models.get(name)
        kind = "named" if named is not None else parse_model_argument(name)[0]
        if kind == "registered":
            models.append(name)
            continue
        values = {**settings.values, **(named or {})}
        arg = name if named is None else (named["path"] if "path" in named else "hub:" + named["hub"])
        try:
            if repeated_model(name, arg, seen):  # the same folder twice is one model, said in one warning line
                continue
            spec = user_model_spec(arg, trust_remote_code=bool(values["trust_remote_code"]), taken=taken)
            if named is not None:
                spec = dataclasses.replace(spec, name=name)
            where = f"--models {name}"
            config = spec.architecture(spec) if spec.architecture else None
            model_data = user_data(spec.task, config, values, where)
        except CompressbenchError as exc:
            raise pytest.UsageError(str(exc)) from None
        taken.add(spec.name)
        if model_data is not None:
            data[spec.name] = model_data
        models.append(spec)
    if data_options and not any(not isinstance(m, str) for m in models):
        flags = ", ".join("--" + o.replace("_", "-") for o in data_options)
        raise pytest.UsageError(f"{flags} apply to models given by path or hub id (--models ./my-model or "
                                "hub:org/name); registered models keep their own data")
    return (models if names is not None else None), data


def pytest_configure(config):
    from compressors.builders.models import MODELS
    from compressors.builders.techniques import TECHNIQUES

    state = run_state(config)
    settings = state.settings
    names = _split("--models", settings.models, MODELS.describe_names())
    techniques = _split("--techniques", replay_names(settings.techniques), TECHNIQUES.describe_names())
    techniques, families = search_families(settings, techniques)
    models, state.user_data = user_selection(settings, names)
    check_selection(models, techniques)
    state.selection = Selection(models, techniques)
    from bench.plugin.search import search_request

    state.search = search_request(settings, families)
    if getattr(config.option, "numprocesses", None) and getattr(config.option, "benchmark_save", None):
        # pytest-benchmark disables timing under xdist and then saves nothing; say so before any work.
        raise pytest.UsageError(
            f"--benchmark-save={config.option.benchmark_save} with -n {config.option.numprocesses}: pytest-benchmark "
            "turns timing off under pytest-xdist, so nothing would be saved. Run without -n to save a run "
            "(-n is for building artifacts and checking accuracy in parallel, without --benchmark-save).")
    if settings.device is not None:
        from compressors.machine.hardware import DeviceError, detect, parse_device

        try:
            state.device = parse_device(settings.device, detect())
        except DeviceError as exc:
            raise pytest.UsageError(str(exc)) from None
