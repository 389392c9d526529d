"""The core layer: registries, configs, the artifact cache (local and remote), settings, scratch folders,
library noise, content hashes and task names. It imports nothing else of the package.
"""
