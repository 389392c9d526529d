"""The records layer: result rows as saved in a run, the table of metrics and the results table built from
it, and the statistics behind verdicts (bootstrap intervals, paired ratios, rank and McNemar tests). Builds on
core only.
"""
