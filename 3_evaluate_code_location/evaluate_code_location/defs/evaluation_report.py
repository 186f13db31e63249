"""`evaluate/evaluation_report`: each experiment's model on the held-out test split, beside unigram and bigram
baselines; partitioned like the model, one partition per experiment."""

import dagster as dg

from evaluate_code_location.baselines import bigram_baseline, unigram_baseline
from shared_code_location.contract.asset_keys import (
    EVALUATION_REPORT,
    SUMMARY_METADATA_KEY,
    TEST_TOKENS,
    TRAIN_TOKENS,
    TRAINED_MODEL,
    VOCABULARY,
    inputs,
)
from shared_code_location.contract.storage_formats import TensorBundle
from shared_code_location.contract.token_shards import TokenShards
from shared_code_location.runtime.automation import ON_UPSTREAM_CHANGE


def _metrics_table(rows: dict[str, dict[str, float]]) -> str:
    lines = ["| | loss (nats/char) | perplexity | bits/char | next-char accuracy |", "|---|---|---|---|---|"]
    for name, m in rows.items():
        lines.append(
            f"| {name} | {m['loss']:.4f} | {m['perplexity']:.2f} "
            f"| {m['bits_per_character']:.3f} | {m['accuracy']:.1%} |"
        )
    return "\n".join(lines)


@dg.asset(
    **EVALUATION_REPORT.produced(),
    group_name="evaluate",
    ins=inputs(trained_model=TRAINED_MODEL, vocabulary=VOCABULARY, train_tokens=TRAIN_TOKENS, test_tokens=TEST_TOKENS),
    code_version="1",
    automation_condition=ON_UPSTREAM_CHANGE,
    kinds={"pytorch", "json"},
)
def evaluation_report(
    context: dg.AssetExecutionContext,
    trained_model: TensorBundle,
    vocabulary: dict,
    train_tokens: TokenShards,
    test_tokens: TokenShards,
) -> dict:
    """Test loss, perplexity, bits/char and accuracy of the model and of both baselines; samples from fixed prompts."""
    from evaluate_code_location.model_metrics import generate_samples, language_model_metrics
    from shared_code_location.model.tokenizer import CharTokenizer
    from shared_code_location.model.transformer import from_tensor_bundle

    model = from_tensor_bundle(trained_model)
    tokenizer = CharTokenizer.from_json(vocabulary)
    model_metrics = language_model_metrics(model, test_tokens)
    baselines = {
        "unigram": unigram_baseline(train_tokens, test_tokens, tokenizer.vocab_size),
        "bigram": bigram_baseline(train_tokens, test_tokens, tokenizer.vocab_size),
    }
    samples = generate_samples(model, tokenizer)
    context.add_output_metadata(
        {
            "test_loss": dg.MetadataValue.float(model_metrics["loss"]),
            "perplexity": dg.MetadataValue.float(model_metrics["perplexity"]),
            "bits_per_character": dg.MetadataValue.float(model_metrics["bits_per_character"]),
            "accuracy": dg.MetadataValue.float(model_metrics["accuracy"]),
            "bigram_loss": dg.MetadataValue.float(baselines["bigram"]["loss"]),
            SUMMARY_METADATA_KEY: f"{context.partition_key}: test loss {model_metrics['loss']:.4f} nats/char, "
            f"bigram baseline {baselines['bigram']['loss']:.4f}",
            "metrics": dg.MetadataValue.md(_metrics_table({"transformer": model_metrics, **baselines})),
            "samples": dg.MetadataValue.md(
                "\n\n".join(f"**{s['prompt'].strip()}**\n```\n{s['prompt']}{s['completion']}\n```" for s in samples)
            ),
        }
    )
    return {
        "experiment": context.partition_key,
        "model": model_metrics,
        "baselines": baselines,
        "samples": samples,
        "model_config": trained_model.metadata["config"],
        "training_summary": trained_model.metadata.get("training_summary", {}),
        # What it was trained with (preset, steps): the baseline gate's advice names them.
        "hyperparameters": trained_model.metadata.get("hyperparameters", {}),
    }
