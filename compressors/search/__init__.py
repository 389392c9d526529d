"""The accuracy-aware search: each technique family's knob searched under the user's limit on held-apart rows
(:mod:`compressors.search.space` the families and their knobs, :mod:`compressors.search.quality` the paired
quality on held-apart rows and its guard, :mod:`compressors.search.engine` the decision rule, bisection,
chains, the frontier and the record). The suite's ``--search`` mode (bench/plugin/search.py) runs it before
collection and benchmarks what it finds as ordinary configurations."""
