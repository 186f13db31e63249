"""Two lm-evaluation-harness tasks of our own, made from the held-out (test) split: what `test_serving.py` runs the
real harness on against the real server. Run in the harness's environment (it has NumPy):
`tests/harness/.venv/bin/python tests/harness/tasks.py TEST_IDS.npy VOCABULARY.json FOLDER`.

- `heldout_rolling` (`loglikelihood_rolling`): the whole split, cut into documents of about `DOCUMENT_CHARACTERS`
  right after a newline (so the harness's prefix token, a newline, is the character that really came before);
  its bits per byte is the split's loss.
- `heldout_choice` (`multiple_choice`): which of four continuations follows a stretch of the split: the true one, or
  one of three taken from elsewhere in it.

Each task is a YAML file and a JSON Lines file in a folder given to the harness with `--include_path`.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

DOCUMENT_CHARACTERS = 12_000
CHOICE_CONTEXT, CHOICE_LENGTH, CHOICE_DOCUMENTS = 48, 12, 40


def documents(text: str, size: int = DOCUMENT_CHARACTERS) -> list[str]:
    """`text` in consecutive pieces of about `size` characters, each ending with a newline (the last: as it ends)."""
    pieces, start = [], 0
    while start < len(text):
        cut = text.find("\n", start + size)
        end = len(text) if cut < 0 else cut + 1
        pieces.append(text[start:end])
        start = end
    return pieces


def choice_documents(text: str, count: int = CHOICE_DOCUMENTS, seed: int = 0) -> list[dict]:
    """`count` questions: a context, the four continuations (the true one at `label`)."""
    rng = random.Random(seed)
    span = CHOICE_CONTEXT + CHOICE_LENGTH
    starts = rng.sample(range(0, len(text) - span), count)
    docs = []
    for start in starts:
        context, truth = text[start : start + CHOICE_CONTEXT], text[start + CHOICE_CONTEXT : start + span]
        others = [text[s : s + CHOICE_LENGTH] for s in rng.sample(range(len(text) - CHOICE_LENGTH), 3)]
        label = rng.randrange(4)
        docs.append({"context": context, "choices": [*others[:label], truth, *others[label:]], "label": label})
    return docs


def write_tasks(folder: Path, text: str) -> dict[str, list]:
    """The two tasks' YAML and data in `folder`; their documents, by task name."""
    folder.mkdir(parents=True, exist_ok=True)
    tasks = {"heldout_rolling": [{"text": doc} for doc in documents(text)], "heldout_choice": choice_documents(text)}
    common = "dataset_path: json\ntest_split: test\n"
    specs = {
        "heldout_rolling": "output_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n",
        "heldout_choice": "output_type: multiple_choice\ndoc_to_text: '{{context}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: label\ntarget_delimiter: ''\nmetric_list:\n  - metric: acc\n",
    }
    for name, docs in tasks.items():
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(doc) + "\n" for doc in docs), encoding="utf-8")
        kwargs = f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
        (folder / f"{name}.yaml").write_text(f"task: {name}\n{common}{kwargs}{specs[name]}metadata:\n  version: 1\n")
    return tasks


def load_tokens(path: Path):
    """A token split's vocabulary ids, as one `.npy` array (test_serving.py writes it with the shared reader)."""
    import numpy as np

    return np.load(path, allow_pickle=False)


def main() -> None:
    """Write the tasks of a token split (the test split's ids as one `.npy`) decoded with a release's vocabulary."""
    tokens, vocabulary, folder = load_tokens(Path(sys.argv[1])), Path(sys.argv[2]), Path(sys.argv[3])
    symbols = json.loads(vocabulary.read_text(encoding="utf-8"))["symbols"]
    tasks = write_tasks(folder, "".join(symbols[int(i)] for i in tokens))
    print(json.dumps({name: len(docs) for name, docs in tasks.items()}))


if __name__ == "__main__":
    main()
