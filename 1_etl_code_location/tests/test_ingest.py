"""Reading a file a block at a time gives exactly what normalizing the whole text gives, and names bad bytes."""

import hashlib

import pytest
from upath import UPath

from etl_code_location.defs import ingest
from etl_code_location.defs.ingest import CorpusError, normalize_text, normalized_pieces, read_text_file
from etl_code_location.defs.split import split_boundaries, text_line_start

#: Line ends of three kinds, a decomposed é (NFC joins it), multi-byte characters, blank lines, trailing newlines.
TEXT = "Cafe\u0301 \u00fcber \u6f22\u5b57\r\nline two\r" + "x" * 37 + "\n\n\nlast e\u0301\n\n\n"


@pytest.mark.parametrize("block", [1, 2, 3, 5, 7, 64, 1 << 20])
def test_streamed_normalization_is_whole_text_normalization(tmp_path, monkeypatch, block):
    monkeypatch.setattr(ingest, "BLOCK_BYTES", block)  # cut everywhere: inside characters, between \r and \n
    monkeypatch.setattr(ingest, "SNIFF_BYTES", 3)  # the first read: just the byte-order mark
    monkeypatch.setattr(ingest, "MAX_LINE_CHARACTERS", 16)  # the line of x's is cut between ASCII characters
    path = tmp_path / "t.txt"
    path.write_bytes(b"\xef\xbb\xbf" + TEXT.encode("utf-8"))
    digest = hashlib.sha256()
    assert "".join(normalized_pieces(UPath(path), digest)) == normalize_text(TEXT)
    assert digest.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_bad_byte_is_named_with_its_offset_and_line_whatever_the_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "BLOCK_BYTES", 4)
    monkeypatch.setattr(ingest, "SNIFF_BYTES", 4)
    path = tmp_path / "bad.txt"
    path.write_bytes("h\u00e9llo\nw\u00f6rld\n".encode() + b"ok \xe9 no\n")
    with pytest.raises(CorpusError, match=r"bad\.txt is not valid UTF-8: byte 17 \(line 3\) is 0xe9"):
        read_text_file(UPath(path))


def test_split_boundaries_are_contiguous_and_on_line_starts():
    text = normalize_text("".join(f"Line {i}: the quick brown fox.\n" for i in range(200)))
    train_end, validation_end = split_boundaries(len(text), 0.9, 0.05, text_line_start(text))
    assert text[train_end - 1] == "\n" and text[validation_end - 1] == "\n"
    assert 0 < train_end < validation_end < len(text)
