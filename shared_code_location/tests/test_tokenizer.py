import numpy as np
import pytest

from shared_code_location.model.tokenizer import UNKNOWN_ID, UNKNOWN_TOKEN, CharTokenizer, UnknownSymbolError


def test_vocabulary_is_sorted_with_unknown_first_and_independent_of_text_order():
    a = CharTokenizer.fit("hello world")
    b = CharTokenizer.fit(["dlrow", " olleh"])
    assert a == b
    assert a.symbols == (UNKNOWN_TOKEN, " ", "d", "e", "h", "l", "o", "r", "w")


def test_round_trip_of_known_text():
    tokenizer = CharTokenizer.fit("To be, or not to be:\nthat is the question.")
    text = "be not to the question, or be:\n"
    ids = tokenizer.encode(text)
    assert ids.dtype == np.uint16
    assert tokenizer.decode(ids) == text


def test_unknown_characters_map_to_id_zero_or_raise_when_strict():
    tokenizer = CharTokenizer.fit("abc")
    assert tokenizer.encode("axb").tolist() == [1, UNKNOWN_ID, 2]
    assert tokenizer.decode(tokenizer.encode("axb")) == f"a{UNKNOWN_TOKEN}b"
    assert tokenizer.unknown_rate("axbx") == 0.5
    with pytest.raises(UnknownSymbolError, match="'x'"):
        tokenizer.encode("axb", strict=True)


def test_json_round_trip_and_malformed_vocabularies():
    tokenizer = CharTokenizer.fit("some text")
    assert CharTokenizer.from_json(tokenizer.to_json()) == tokenizer
    with pytest.raises(ValueError, match="not a char-vocabulary"):
        CharTokenizer.from_json({"symbols": ["a"]})
    broken = tokenizer.to_json() | {"vocab_size": 3}
    with pytest.raises(ValueError, match="size"):
        CharTokenizer.from_json(broken)


def test_decode_rejects_ids_outside_the_vocabulary():
    with pytest.raises(ValueError, match="outside"):
        CharTokenizer.fit("ab").decode([1, 99])
