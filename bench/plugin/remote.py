"""The shared remote artifact cache named by the settings, checked at session start: a URL that cannot work on
this machine is said before anything runs, whatever the local cache holds."""

from __future__ import annotations

import pytest

from bench.plugin.state import run_state


def pytest_configure(config):
    state = run_state(config)
    state.remote_problem = check_remote_url(config, state.settings)


def check_remote_url(config, settings) -> str | None:
    """At session start, whatever the local cache holds: a remote cache URL that cannot work on this machine
    (an unknown protocol, a filesystem package not installed) is a warning naming the URL, the reason and
    the fix, or with --cache-remote-required a usage error. Without this a warm local cache never touches
    the remote and the run ends saying only that nothing was pulled. Returns the warning's text, or None."""
    if not settings.cache_remote:
        return None
    from compressors.core.remote_cache import RemoteCacheWarning, unusable_reason

    reason = unusable_reason(settings.cache_remote)
    if reason is None:
        return None
    source = settings.sources.get("cache_remote", "command line")
    message = f"remote cache {settings.cache_remote} (--cache-remote, from {source}) cannot be used: {reason}"
    if settings.cache_remote_required:
        raise pytest.UsageError(f"{message} (--cache-remote-required)")
    message += "; the run goes on without it (artifacts are built locally, nothing is pulled or pushed)"
    if hasattr(config, "workerinput"):  # said once, by the controller: in the header and the warnings summary
        return None
    config.issue_config_time_warning(RemoteCacheWarning(message), stacklevel=2)
    return message


def pytest_report_header(config):
    state = run_state(config)
    problem = state.remote_problem if state is not None else None
    return f"compressbench: WARNING: {problem}" if problem else None
