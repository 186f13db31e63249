"""Training throughput inside `train()` against a bare loop over the same model, in one process.

`python -m model_code_location.benchmark_throughput --iters 300` (run by scripts/benchmark.py). Prints JSON.
"""

import argparse
import json
import time

import torch
from torch.nn import functional as F

from model_code_location.presets import TrainingConfig
from model_code_location.training import batch_sampler, make_optimizer, train
from shared_code_location.contract.token_shards import TokenShards
from shared_code_location.model.transformer import DecoderTransformer, TransformerConfig


def bare_loop_tokens_per_second(train_ids: TokenShards, vocab_size: int, hp: dict, iters: int) -> float:
    """The minimum a training step costs: sample, forward, loss, backward, clip, AdamW; nothing else."""
    torch.manual_seed(hp["seed"])
    model = DecoderTransformer(
        TransformerConfig(vocab_size, hp["block_size"], hp["n_layer"], hp["n_head"], hp["n_embd"], hp["dropout"])
    )
    optimizer = make_optimizer(model, hp, torch.device("cpu"))
    sample = batch_sampler(train_ids, hp["block_size"], hp["batch_size"], torch.Generator().manual_seed(hp["seed"]))
    start = time.perf_counter()
    for _ in range(iters):
        x, y = sample()
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
        optimizer.step()
    return iters * hp["batch_size"] * hp["block_size"] / (time.perf_counter() - start)


def main() -> None:
    """Alternate bare and in-asset measurements so machine noise hits both alike."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--storage", required=True, help="the IO manager's storage (folder or URI) holding etl/")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from upath import UPath

    from shared_code_location.contract.storage_formats import StorageFormat, decode

    storage = UPath(args.storage)
    train_ids = TokenShards.open(storage, "etl/train_tokens.json")
    validation_ids = TokenShards.open(storage, "etl/validation_tokens.json")
    vocab_size = decode(StorageFormat.JSON, (storage / "etl" / "vocabulary.json").read_bytes())["vocab_size"]
    hp = TrainingConfig(max_iters=args.iters, eval_interval=10**9, eval_tokens=4096, device="cpu").resolved()
    bare, inside = [], []
    for _ in range(args.rounds):
        bare.append(bare_loop_tokens_per_second(train_ids, vocab_size, hp, args.iters))
        inside.append(train(train_ids, validation_ids, vocab_size, hp, log=lambda _: None).summary["tokens_per_second"])
    print(
        json.dumps(
            {
                "bare_tokens_per_second": max(bare),
                "asset_tokens_per_second": max(inside),
                "ratio": max(inside) / max(bare),
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
