"""What a loader of one artifact kind declares (:class:`ArtifactLoader`), the registry of them
(:data:`ARTIFACT_LOADERS`) and the helpers several kinds share.

The registry here fills as the modules of :mod:`compressors.execution.loaders` are imported; read it
through :mod:`compressors.execution.runtime` (or that package), which imports every one of them first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from compressors.core.cache import Artifact
from compressors.core.registry import Registry
from compressors.execution.predictors import RUNTIME_IMPORTS, Predictor, TorchPredictor


@dataclasses.dataclass(frozen=True)
class ArtifactLoader:
    """How to load one artifact kind.

    Args:
        runtime: key of :data:`~compressors.execution.predictors.RUNTIME_IMPORTS` (what the memory
            baseline imports).
        load: ``load(artifact, device) -> Predictor``.
        module: for kinds that hold a float PyTorch model (the ``TORCH_MODEL`` flow):
            ``module(artifact) -> nn.Module`` on CPU, what the next stage of a chain
            compresses further.
        pickled: loading unpickles the artifact (``torch.load(weights_only=False)``): it is built on each
            machine and never pulled from a shared remote cache.
        pickles: import paths (``module.Class``) of this package's own classes the pickle names: they go
            into the cache key of every technique that writes this kind, so moving such a class rebuilds
            the artifact once (a new key) instead of leaving a cached pickle that no longer loads.
        pickle_packages: the distributions whose classes the pickle names (``torch``, ``transformers``, and
            ``kernels``, whose ``Mode`` transformers attaches to its models): their versions go into the
            cache key of every technique that writes this kind, so another version rebuilds instead of
            unpickling a file written by the old one. Required when ``pickled``.
        remote_file_types: file suffixes (``.bin``) this kind's files have beyond those every kind may
            hold (:data:`compressors.core.remote_cache.SAFE_SUFFIXES`) and that load without pickle: a
            pulled entry of this kind may hold them. A kind that forgets one is refused by the remote
            cache and built locally.
    """

    runtime: str
    load: Callable[[Artifact, str], Predictor]
    module: Callable[[Artifact], Any] | None = None
    pickled: bool = False
    pickles: tuple[str, ...] = ()
    pickle_packages: tuple[str, ...] = ()
    remote_file_types: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIME_IMPORTS:
            raise ValueError(f"runtime {self.runtime!r} not in {sorted(RUNTIME_IMPORTS)}")
        if (self.pickles or self.pickle_packages) and not self.pickled:
            raise ValueError(f"a loader that names what its pickle holds ({[*self.pickles, *self.pickle_packages]}) "
                             "unpickles: give pickled=True")
        if self.pickled and not self.pickle_packages:
            raise ValueError("a loader that unpickles names the distributions whose classes its pickle holds "
                             "(pickle_packages), so that their versions key the artifact")
        bad = [p for p in self.pickles if not isinstance(p, str) or "." not in p]
        if bad:
            raise ValueError(f"pickles {bad}: give import paths, module.Class")
        if isinstance(self.remote_file_types, str):
            raise ValueError(f"remote_file_types={self.remote_file_types!r}: give a set of suffixes")
        if self.pickled and self.remote_file_types:
            raise ValueError("a pickled kind never travels through the remote cache: it declares no remote_file_types")
        bad = [s for s in self.remote_file_types if not (s.startswith(".") and s == s.lower() and len(s) > 1)]
        if bad:
            raise ValueError(f"remote_file_types {bad}: give lowercase suffixes with their dot (.bin)")


ARTIFACT_LOADERS: Registry[ArtifactLoader] = Registry("artifact kind")

# What a whole pickled Hugging Face model names: torch modules and tensors, the transformers model and config
# classes, and the kernels package's Mode (transformers' hub-kernel switch, set on every model).
HF_MODEL_PICKLE_PACKAGES = ("torch", "transformers", "kernels")


def torch_module_predictor(module_loader: Callable[[Artifact], Any]) -> Callable[[Artifact, str], TorchPredictor]:
    """A ``load`` for kinds whose predictor is just their float module moved to the device."""

    def load(artifact: Artifact, device: str) -> TorchPredictor:
        return TorchPredictor(module_loader(artifact).to(device), device)

    return load


def load_pickled_module(
    artifact: Artifact, filename: str, device: str, extra_placement: dict | None = None
) -> TorchPredictor:
    """Load a whole ``torch.save``-d module (quantized modules whose packed weights no
    state-dict format holds).

    ``weights_only`` loading cannot read such a file; it is one this suite wrote into its own
    cache, verified against the manifest's sha256 before loading, under a cache key that holds
    the versions of the libraries whose classes it names (:attr:`ArtifactLoader.pickle_packages`) and the
    paths of the package's own classes (:attr:`ArtifactLoader.pickles`). ``mmap`` avoids a second copy.
    """
    import torch

    model = torch.load(artifact.file(filename), weights_only=False, mmap=True, map_location=device)
    return TorchPredictor(model, device, extra_placement)
