"""The quality layer: the data (SST-2, WikiText-2 or the user's files, as one ``TaskData``) and the
metrics (accuracy, perplexity, size; the definitions of what a fresh process measures and where it is stored).
"""
