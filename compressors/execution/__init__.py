"""The execution layer: running a model: loading any artifact as a predictor (``runtime``), the predictors
(``predictors``), the loader of every artifact kind (``loaders``), Hugging Face model classes and side files
(``hf``), module surgery on torch models (``nn``).
"""
