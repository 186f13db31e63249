"""`etl/corpus`: every text file of the input folder, validated and normalized, built as a graph of two ops."""

import hashlib
import unicodedata
from pathlib import Path

import dagster as dg

from shared_code_location.contract.asset_keys import ETL_PREFIX, stored_as
from shared_code_location.contract.resources import InputFilesResource
from shared_code_location.contract.storage_formats import StorageFormat
from shared_code_location.contract.versions import EXTERNAL_INPUT_TAG, versioned_output

#: The normalized corpus; stays in this location (its splits and tokens are what crosses).
CORPUS_KEY = dg.AssetKey([ETL_PREFIX, "corpus"])

# Bytes that never occur in text; their presence means a binary file was dropped in the input folder.
_BINARY_CONTROL_BYTES = frozenset(range(0, 9)) | frozenset(range(14, 32)) - {27}


class CorpusError(ValueError):
    """The input corpus is missing, empty, binary or not UTF-8; the message names the file."""


def read_text_file(path: Path) -> str:
    """The file's text, strictly UTF-8 (a BOM is dropped); raises `CorpusError` naming the file and the problem."""
    from shared_code_location.contract.storage import storage_errors

    with storage_errors(path):
        data = path.read_bytes()
    if not data.strip():
        raise CorpusError(f"input file {path} is empty")
    sample = data[:65536]
    if b"\x00" in sample or sum(byte in _BINARY_CONTROL_BYTES for byte in sample) > len(sample) // 100:
        raise CorpusError(f"input file {path} looks binary (NUL or control bytes), not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise CorpusError(
            f"input file {path} is not valid UTF-8: byte {error.start} (line {line}) is {data[error.start]:#04x}"
        ) from error
    return text


def normalize_text(text: str) -> str:
    """Unicode NFC, `\\n` line endings, exactly one trailing newline: the same words always give the same ids."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return text.rstrip("\n") + "\n"


@dg.op(
    description="Read every matching file of the input folder as strict UTF-8.",
    out=dg.Out(metadata=stored_as(StorageFormat.JSON)),
)
def read_corpus_files(context: dg.OpExecutionContext, input_files: InputFilesResource) -> list[dict[str, str]]:
    """One `{"name", "text"}` per input file, in name order."""
    files = input_files.list_files()
    documents = [{"name": path.name, "text": read_text_file(path)} for path in files]
    context.log.info(f"read {len(documents)} file(s) from {input_files.path}: {[d['name'] for d in documents]}")
    return documents


@dg.op(description="Normalize each document and join them into one corpus.")
def normalize_corpus(context: dg.OpExecutionContext, documents: list[dict[str, str]]) -> dg.Output[str]:
    """The documents normalized and joined with a blank line between them; its data version is their sha256."""
    corpus = "\n".join(normalize_text(document["text"]) for document in documents)
    context.add_output_metadata(
        {
            "files": dg.MetadataValue.json([document["name"] for document in documents]),
            "characters": len(corpus),
            "lines": corpus.count("\n"),
            "distinct_characters": len(set(corpus)),
            "corpus_sha256": hashlib.sha256(corpus.encode("utf-8")).hexdigest(),
            "preview": dg.MetadataValue.md(f"```\n{corpus[:400]}\n```"),
        }
    )
    return versioned_output(corpus, StorageFormat.TEXT)


@dg.graph_asset(
    key=CORPUS_KEY,
    group_name="etl",
    description="The normalized text corpus: every *.txt file of the input folder (graph of two ops).",
    metadata=stored_as(StorageFormat.TEXT),
    code_version="1",
    tags={EXTERNAL_INPUT_TAG: "input_folder"},
    kinds={"text"},
)
def corpus() -> str:
    return normalize_corpus(read_corpus_files())
