"""clip_text: a long text is cut before the tokenizer sees it, at no change to the tokens kept
(tokenizers encode the whole text before truncating: ~140 bytes of memory a character)."""

from __future__ import annotations

import random

import pytest

from lccore.data import CLIP_SPAN_PER_TOKEN, clip_text


def texts(seed: int) -> list[str]:
    rng = random.Random(seed)
    words = ["the", "film", "was", "great", "Überraschung", "naïve", "東京", "😀", "x" * 120, "don't", "-", "\u200b", "\t", "co-operate"]
    made = []
    for _ in range(30):
        count = rng.choice([5, 200, 3000])
        spaces = [" ", "  ", "\n", " \n\n   ", " " * 50]
        made.append("".join(rng.choice(words) + rng.choice(spaces) for _ in range(count)))
    made += ["a" * 100_000, "word " * 50_000, " " * 20_000 + "end", "start" + " " * 20_000, "a " * 200 + "b" * 100_000 + " c" * 200]
    return made


@pytest.fixture(scope="module", params=["wordpiece", "byte-level bpe"])
def tokenizer(request, tiny_model, gpt2_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model if request.param == "wordpiece" else gpt2_model)


@pytest.mark.parametrize("max_length", [8, 64, 512])
def test_the_tokens_kept_are_those_of_the_whole_text(tokenizer, max_length):
    for text in texts(max_length):
        clipped = clip_text(text, max_length)
        assert text.startswith(clipped) and len(clipped) <= max_length * CLIP_SPAN_PER_TOKEN
        whole = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer(clipped, add_special_tokens=False)["input_ids"][:max_length] == whole[:max_length]
        end = clip_text(text, max_length, keep="end")
        assert text.endswith(end) and len(end) <= max_length * CLIP_SPAN_PER_TOKEN
        assert tokenizer(end, add_special_tokens=False)["input_ids"][-max_length:] == whole[-max_length:]


def test_a_short_text_is_left_as_it_is_and_a_long_one_bounded():
    assert clip_text("a warm, funny film", 8) == "a warm, funny film"
    long = "word " * 10_000
    assert len(clip_text(long, 128)) < 2_000 and clip_text(long, 128).endswith("word")
    assert len(clip_text("a" * 10_000_000, 512)) == 512 * 256  # one word: its characters are bounded
    assert len(clip_text(" " * 10_000_000 + "end", 128)) == 128 * CLIP_SPAN_PER_TOKEN  # whitespace too


@pytest.mark.parametrize("piece_chars", [16 * 300, 16 * 4000])  # pieces more than twice the longest word: a cut never falls inside one
def test_tokenizing_in_pieces_gives_the_ids_of_one_call(tokenizer, piece_chars):
    """tokenize_in_pieces: no tokenizer call reads more than piece_chars characters, and the ids
    are those of one call on the whole texts."""
    from lccore.data import tokenize_in_pieces

    seen = []

    class Counting:
        def __call__(self, texts, **kwargs):
            seen.append(sum(len(t) for t in texts))
            return tokenizer(texts, **kwargs)

    made = texts(piece_chars)[:30] + ["", "one", "tab\tseparated\nlines  and   runs " * 40]
    assert tokenize_in_pieces(Counting(), made, piece_chars=piece_chars) == tokenizer(made, add_special_tokens=False)["input_ids"]
    assert max(seen) <= piece_chars
