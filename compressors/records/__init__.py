"""The records layer: result rows as saved in a run, and the statistics behind verdicts (bootstrap
intervals, paired ratios, rank and McNemar tests). Builds on core only.
"""
