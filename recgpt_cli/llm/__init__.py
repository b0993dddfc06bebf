"""LLM layer: backends (llama.cpp, transformers, OpenAI-compatible, fake), prompt files, validated JSON, cache."""
