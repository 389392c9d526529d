"""The execution layer: running a model: loaders and predictors for each artifact kind (``runtime``),
Hugging Face model classes and side files (``hf``), module surgery on torch models (``nn``).
"""
