"""What every build step needs to know about the run it is part of."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from compressors.core.cache import ArtifactCache
from compressors.machine.hardware import CpuInfo, this_cpu


@dataclasses.dataclass
class BuildContext:
    """Run-wide settings for building artifacts.

    Args:
        cache: where built artifacts are stored.
        data_dir: where SST-2 and WikiText-2 come from: a mirror folder, ``"hub"`` or ``"embedded"``
            (:func:`~compressors.quality.data.resolve_data_dir`; None: ``$COMPRESSBENCH_DATA_DIR``, else
            the copy shipped in the package).
        hf_cache_dir: Hugging Face Hub cache to read hub models from (None: the
            library's default, ``$HF_HUB_CACHE``).
        hf_local_only: never contact the hub, use only what the HF cache holds.
        progress: show progress bars while training or exporting.
        model: the :class:`~compressors.builders.models.ModelSpec` whose chain is being built, for
            techniques that start from its pretrained encoder (LoRA); None outside a case.
        cpu: the CPU the artifacts are built for (configs resolve machine-dependent choices
            from it, :meth:`~compressors.core.config.Config.for_machine`); this machine's by default.
        data: the model's data (:class:`~compressors.quality.taskdata.TaskData`): evaluation rows for its
            task, train rows for what trains or calibrates; None outside a case. While a technique
            builds, its view of it (:meth:`~compressors.quality.taskdata.TaskData.for_stage`).
    """

    cache: ArtifactCache = dataclasses.field(default_factory=ArtifactCache)
    data_dir: Path | str | None = None
    hf_cache_dir: Path | None = None
    hf_local_only: bool = dataclasses.field(
        default_factory=lambda: os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    )
    progress: bool = True
    model: Any = None
    cpu: CpuInfo = dataclasses.field(default_factory=this_cpu)
    data: Any = None

    def require_data(self):
        """The data, or an error saying that this build needs some (a context made outside a case)."""
        if self.data is None:
            from compressors.quality.data import DataError

            raise DataError("this build reads data, and its build context has none (BuildContext.data)")
        return self.data
