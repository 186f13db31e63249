"""Reading one input file in bounded memory: validated (not empty, not binary, strict UTF-8), normalized, and turned
into character ids, a block at a time, so that a file of any size costs the same memory.

The rules are those of `normalize_text` on the whole text (Unicode NFC, `\\n` line endings, exactly one trailing
newline), applied to pieces cut at line ends: a line end is a boundary that NFC never reaches across, so the pieces
normalize to exactly what the whole text would. (A line longer than `MAX_LINE_CHARACTERS` is cut between two ASCII
characters instead, which NFC never joins either.)
"""

from __future__ import annotations

import codecs
import hashlib
import re
import unicodedata
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from upath import UPath

#: Bytes read from the file at a time.
BLOCK_BYTES = 8 << 20
#: Characters of one line held back while waiting for its end, before a line is cut elsewhere.
MAX_LINE_CHARACTERS = 4 << 20
#: The start of a file that is checked for binary content.
SNIFF_BYTES = 65536
# Bytes that never occur in text; their presence means a binary file was dropped in the input folder.
_BINARY_CONTROL_BYTES = frozenset(range(0, 9)) | frozenset(range(14, 32)) - {27}
# Two ASCII characters (the first not a carriage return): NFC never joins them, so a long line can be cut between.
_ASCII_PAIR = re.compile(r"[\x00-\x0c\x0e-\x7f](?=[\x00-\x7f])")
#: A file's characters get ids in a 16-bit scratch file; more distinct characters than this is not text.
MAX_DISTINCT_CHARACTERS = 1 << 16


class CorpusError(ValueError):
    """An input file is missing, empty, binary or not UTF-8; the message names the file and the problem."""


def normalize_text(text: str) -> str:
    """Unicode NFC, `\\n` line endings, exactly one trailing newline: the same words always give the same ids."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return text.rstrip("\n") + "\n"


def read_text_file(path: UPath) -> str:
    """The whole file, validated and normalized (small files; the ETL streams with `normalized_pieces`)."""
    return "".join(normalized_pieces(path))


def normalized_pieces(path: UPath, digest: hashlib._Hash | None = None) -> Iterator[str]:
    """The text of the file at `path`, as `normalize_text` would make it, in pieces of at most a few MB. Raises
    `CorpusError` naming the file when it is empty (or only whitespace), looks binary, or is not UTF-8 (with the
    byte offset and line of the first bad byte). `digest` is updated with every byte read."""
    from shared_code_location.contract.storage import storage_errors

    pending = b""  # the start of a UTF-8 sequence that the next block completes
    offset, lines = 0, 0  # bytes, and line ends among them, before `pending`
    carry = ""  # decoded text after the last line end
    held = 0  # line ends not yet given out: trailing ones are replaced by exactly one
    blank = True
    with storage_errors(path):
        if not path.is_file():
            raise CorpusError(f"input file {path} does not exist (removed since its partition was added?)")
        handle = path.open("rb")
    with handle:
        first = True
        while True:
            with storage_errors(path):  # the first read covers the binary check and a byte-order mark whole
                block = handle.read(max(BLOCK_BYTES, SNIFF_BYTES) if first else BLOCK_BYTES)
            if digest is not None:
                digest.update(block)
            final = not block
            if first:
                first = False
                _refuse_binary(path, block[:SNIFF_BYTES])
                if block.startswith(codecs.BOM_UTF8):
                    block, offset = block[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)
            blank = blank and not block.strip()
            data = pending + block
            try:
                text, used = codecs.utf_8_decode(data, "strict", final)
            except UnicodeDecodeError as error:
                line = lines + data[: error.start].count(b"\n") + 1
                raise CorpusError(
                    f"input file {path} is not valid UTF-8: byte {offset + error.start} (line {line}) is "
                    f"{data[error.start]:#04x}"
                ) from None
            lines += data[:used].count(b"\n")
            offset, pending = offset + used, data[used:]
            text = carry + text
            cut = len(text) if final else _cut(text)
            carry = text[cut:]
            if cut:
                piece = unicodedata.normalize("NFC", text[:cut].replace("\r\n", "\n").replace("\r", "\n"))
                content = piece.rstrip("\n")
                if content:
                    if held:
                        yield "\n" * held
                    yield content
                    held = 0
                held += len(piece) - len(content)
            if final:
                break
    if blank:
        raise CorpusError(f"input file {path} is empty")
    yield "\n"


def _refuse_binary(path: UPath, sample: bytes) -> None:
    if b"\x00" in sample or sum(byte in _BINARY_CONTROL_BYTES for byte in sample) > len(sample) // 100:
        raise CorpusError(f"input file {path} looks binary (NUL or control bytes), not text")


def _cut(text: str) -> int:
    """Where `text` can be cut so that its head normalizes alone: after its last line end; in a line longer than
    `MAX_LINE_CHARACTERS`, between its last two ASCII characters; else nowhere yet (0)."""
    cut = text.rfind("\n") + 1
    if cut or len(text) <= MAX_LINE_CHARACTERS:
        return cut
    tail = max(0, len(text) - (1 << 20))
    pairs = [match.start() + 1 for match in _ASCII_PAIR.finditer(text, tail)]
    return pairs[-1] if pairs else 0


class CharacterIds:
    """Ids of one file's characters, in order of first appearance (`codes[id]` is the code point of each): what the
    scratch file holds. `sorted_ids` then maps them to the order of code points, the file's own vocabulary."""

    def __init__(self) -> None:
        self._table = np.full(0x110000, -1, dtype=np.int32)  # code point -> id; every Unicode code point fits
        self.codes: list[int] = []

    def encode(self, text: str, path: UPath) -> np.ndarray:
        """The ids of `text`'s characters (uint16), new characters getting the next ids."""
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = self._table[points]
        if (ids < 0).any():
            new = np.unique(points[ids < 0])
            if len(self.codes) + len(new) > MAX_DISTINCT_CHARACTERS:
                raise CorpusError(f"input file {path} has more than {MAX_DISTINCT_CHARACTERS:,} distinct characters")
            self._table[new] = np.arange(len(self.codes), len(self.codes) + len(new))
            self.codes += new.tolist()
            ids = self._table[points]
        return ids.astype(np.uint16)

    def id_of(self, character: str) -> int:
        """The id of `character`, or -1 if the file has none."""
        return int(self._table[ord(character)])

    def sorted_ids(self) -> tuple[list[str], np.ndarray]:
        """(the file's characters in code-point order, the position there of each id)."""
        codes = np.asarray(self.codes, dtype=np.int64)
        order = np.argsort(codes)
        position = np.empty(len(codes), dtype=np.int64)
        position[order] = np.arange(len(codes))
        return [chr(code) for code in codes[order]], position
