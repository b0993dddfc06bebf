"""recgpt_cli.tokens: counting with the embedded GGUF's own tokenizer (vocab only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recgpt_cli.errors import BadInput
from recgpt_cli.llm.embedded import embedded_model_path
from recgpt_cli.tokens import count_tokens, token_counter

pytestmark = pytest.mark.model


def test_counts_match_the_model_tokenizer() -> None:
    from llama_cpp import Llama

    texts = ["Lumina Stainless Steel Cookware Set (Cookware)", "", 'search:"waterproof hiking boots"', "hello"]
    got = count_tokens(texts)
    ref = Llama(model_path=str(embedded_model_path()), vocab_only=True, verbose=False, n_ctx=16)
    assert got == [len(ref.tokenize(t.encode(), add_bos=False, special=False)) for t in texts]
    assert got[1] == 0 and got[3] == 1 and got[0] > 5


def test_longer_text_has_more_tokens_and_counter_is_cached() -> None:
    count = token_counter()
    a, b = count(["2025-06-28(purchase) | Lumina Cookware Set (Cookware)", "2025-06-28(purchase) | Lumina"])
    assert a > b > 0
    assert count_tokens(["x " * 50]) == count(["x " * 50])


def test_explicit_tokenizer_path_and_bad_path(tmp_path: Path) -> None:
    assert count_tokens(["hello world"], tokenizer=embedded_model_path()) == count_tokens(["hello world"])
    with pytest.raises(BadInput, match="no such tokenizer file"):
        token_counter(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf")
    with pytest.raises(BadInput, match="cannot load a tokenizer"):
        count_tokens(["x"], tokenizer=junk)
