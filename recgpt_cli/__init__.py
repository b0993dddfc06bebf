"""recgpt: an open-source implementation of Taobao's RecGPT recommender pipeline (arXiv 2507.22879)."""

__version__ = "0.1.0"
