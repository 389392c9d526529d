"""The quality layer: the data (SST-2, WikiText-2 or the user's files, as one ``TaskData``) and the
metrics (accuracy, perplexity, size, memory measured in a fresh process).
"""
