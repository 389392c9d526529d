"""One reader of the run's settings for the suite's modules (resources, rows, timing).

A setting of compressors.core.settings is read from the run's resolved settings
(``config.compressbench_settings``, built once by the suite's wiring); a stand-in config in unit tests
has none, and then gets the flag's value or the setting's one default. Any other pytest option
(``verbose``, ``benchmark_min_rounds``, ...) is read with ``config.getoption``. Kept in one place so
the suite's plugin can own the reading later by pointing this function at its own reader.
"""

from __future__ import annotations

from typing import Any


def setting(config, name: str, default: Any = None) -> Any:
    """The value of ``name`` in this run.

    ``name``: a setting's key (``max_build_seconds``) or flag (``--max-build-seconds``), or the name of
    another pytest option (``verbose``, ``benchmark_min_rounds``). ``default``: returned for an option
    that is not a setting when the config has no value for it (a stand-in config in unit tests).
    """
    from compressors.core.settings import BY_NAME

    key = name.lstrip("-").replace("-", "_")
    settings = getattr(config, "compressbench_settings", None)
    if key in BY_NAME and settings is not None:
        return settings.values[key]
    try:
        value = config.getoption(BY_NAME[key].flag if key in BY_NAME else name)
    except (ValueError, AttributeError):  # a stand-in config (unit tests)
        value = None
    if value is None and key in BY_NAME:
        return BY_NAME[key].default
    return default if value is None else value
