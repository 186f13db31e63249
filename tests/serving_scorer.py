"""Score a token split through a running server's /v1/completions (echo, max_tokens 0, logprobs), on the windows
`window_metrics` uses: run in the deploy location's venv (numpy and the official `openai` client) by
test_serving.py. Prints {"loss": nats per token, "tokens": how many, "requests": how many} as JSON.

`python serving_scorer.py URL TOKENS.npy VOCABULARY.json BLOCK_SIZE`
"""

import json
import sys
from pathlib import Path

import numpy as np
import openai

PROMPTS_PER_REQUEST = 16  # the server's limit


def windows(tokens: np.ndarray, block: int) -> list[np.ndarray]:
    """Consecutive non-overlapping windows of `block` inputs, each with its next token: block + 1 ids (the ids
    that `window_metrics` scores: inputs tokens[i*block : (i+1)*block], targets shifted by one)."""
    usable = (len(tokens) - 1) // block * block
    return [tokens[start : start + block + 1] for start in range(0, usable, block)]


def main() -> None:
    url, tokens_path, vocabulary_path, block = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    symbols = json.loads(Path(vocabulary_path).read_text(encoding="utf-8"))["symbols"]
    texts = ["".join(symbols[i] for i in window) for window in windows(np.load(tokens_path), block)]
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
    total, count, requests = 0.0, 0, 0
    for start in range(0, len(texts), PROMPTS_PER_REQUEST):
        batch = texts[start : start + PROMPTS_PER_REQUEST]
        answer = client.completions.create(
            model="char-transformer", prompt=batch, echo=True, max_tokens=0, logprobs=0, temperature=0
        )
        requests += 1
        for text, choice in zip(batch, sorted(answer.choices, key=lambda c: c.index), strict=True):
            assert choice.text == text and choice.logprobs.token_logprobs[0] is None
            scored = choice.logprobs.token_logprobs[1:]
            total -= sum(scored)
            count += len(scored)
    print(json.dumps({"loss": total / count, "tokens": count, "requests": requests}))


if __name__ == "__main__":
    main()
