"""The records layer: result rows as saved in a run, the table of metrics and the results table built from
it, the statistics behind verdicts (bootstrap intervals, paired ratios, rank and McNemar tests), and the
accuracy-aware search's record. Builds on core only.
"""
