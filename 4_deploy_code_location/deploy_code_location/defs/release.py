"""`deploy/leaderboard` → `deploy/onnx_model` → `deploy/release` → `deploy/latest_release`: export the winning
experiment's model, publish it, then move the pointer.

Each step is gated by blocking checks: parity before a release is written, a load-and-generate test of the written
release before `latest.json` moves to it.
"""

import datetime as dt
import json

import dagster as dg

from deploy_code_location.defs.leaderboard import LEADERBOARD_KEY
from deploy_code_location.onnx_signature import OPSET, SIGNATURE
from shared_code_location.contract.asset_keys import (
    DEPLOY_PREFIX,
    EVALUATION_REPORT,
    IO_MANAGER_KEY,
    SUMMARY_METADATA_KEY,
    TEST_TOKENS,
    TRAIN_TOKENS,
    TRAINED_MODEL,
    VALIDATION_TOKENS,
    VOCABULARY,
    stored_as,
)
from shared_code_location.contract.resources import OutputFolderResource
from shared_code_location.contract.storage_formats import StorageFormat, TensorBundle, sha256_hex
from shared_code_location.contract.versions import data_version, latest_materialization
from shared_code_location.runtime.automation import ON_UPSTREAM_CHANGE, ON_UPSTREAM_DATA_CHANGE

ONNX_MODEL_KEY = dg.AssetKey([DEPLOY_PREFIX, "onnx_model"])
RELEASE_KEY = dg.AssetKey([DEPLOY_PREFIX, "release"])
LATEST_RELEASE_KEY = dg.AssetKey([DEPLOY_PREFIX, "latest_release"])
#: Upstream assets whose data versions a model card records (the winner's partition of the partitioned ones), so a
#: release traces back to its exact inputs.
_LINEAGE = (TRAINED_MODEL, EVALUATION_REPORT, VOCABULARY, TRAIN_TOKENS, VALIDATION_TOKENS, TEST_TOKENS)


def winning_model(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext, leaderboard: dict) -> TensorBundle:
    """The winner's weights, as evaluated: fails if the experiment was retrained since its evaluation (the
    automation then runs evaluate and the leaderboard again before exporting)."""
    winner = leaderboard["winner"]
    current = data_version(latest_materialization(context.instance, TRAINED_MODEL.key, winner))
    if current != leaderboard["winner_model_data_version"]:
        raise dg.Failure(
            f"experiment {winner!r} was retrained after the evaluation the leaderboard ranked "
            f"({leaderboard['winner_model_data_version']} -> {current}); evaluate it again first"
        )
    return context.resources.io_manager.load_partition(TRAINED_MODEL, winner)


@dg.asset(
    key=ONNX_MODEL_KEY,
    group_name="deploy",
    ins={"leaderboard": dg.AssetIn(key=LEADERBOARD_KEY)},
    metadata=stored_as(StorageFormat.ONNX),
    io_manager_key=IO_MANAGER_KEY,
    # The IO manager also reads the one winning partition of model/trained_model (not every experiment's weights).
    required_resource_keys={IO_MANAGER_KEY},
    code_version="5",  # 3: positions and a cache mask per row; 4: the leaderboard's winner; 5: parity recorded
    # Not in the leaderboard's own tick: only once its data version (the winner) changed.
    automation_condition=ON_UPSTREAM_DATA_CHANGE,
    kinds={"onnx"},
)
def onnx_model(context: dg.AssetExecutionContext, leaderboard: dict) -> bytes:
    """The winning experiment's model exported with the dynamo ONNX exporter: one file, key/value cache in and out,
    dynamic batch, sequence and cached length (see `onnx_signature`). Its parity with PyTorch is measured here, with
    the model in hand, and recorded: the blocking check `onnx_matches_pytorch` gates on it and the release's model
    card keeps it."""
    from deploy_code_location.onnx_export import export_onnx, max_logit_difference
    from shared_code_location.model.transformer import from_tensor_bundle

    model = from_tensor_bundle(winning_model(context, leaderboard))
    data = export_onnx(model)
    differences = max_logit_difference(model, data)
    context.add_output_metadata(
        {
            "onnx_bytes": len(data),
            "opset": OPSET,
            "experiment": leaderboard["winner"],
            _EXPORTED_VERSION_KEY: leaderboard["winner_model_data_version"],
            "max_abs_difference": max(differences.values()),
            "parity_by_shape": dg.MetadataValue.json(differences),
        }
    )
    return data


#: onnx_model's metadata: the data version of the winner's weights it exported.
_EXPORTED_VERSION_KEY = "model_data_version"


def _check_export_matches(context: dg.AssetExecutionContext, leaderboard: dict) -> dict[str, float]:
    """Fails unless `deploy/onnx_model` holds the leaderboard's winner, as ranked: a release never pairs one
    experiment's ONNX file with another's model card. Returns the parity it measured, by shape."""
    record = latest_materialization(context.instance, ONNX_MODEL_KEY)
    metadata = record.asset_materialization.metadata if record else {}
    exported = (
        getattr(metadata.get("experiment"), "value", None),
        getattr(metadata.get(_EXPORTED_VERSION_KEY), "value", None),
    )
    if exported != (leaderboard["winner"], leaderboard["winner_model_data_version"]):
        raise dg.Failure(
            f"deploy/onnx_model holds experiment {exported[0]!r}, not the leaderboard's winner "
            f"{leaderboard['winner']!r} as ranked; materialize deploy/onnx_model first"
        )
    return getattr(metadata.get("parity_by_shape"), "value", None) or {}


def _upstream_data_versions(context: dg.AssetExecutionContext, experiment: str) -> dict[str, str | None]:
    versions = {}
    for asset in _LINEAGE:  # the contract says which are partitioned by experiment
        partition = experiment if asset.partitions_def is not None else None
        versions[asset.key.to_user_string()] = data_version(
            latest_materialization(context.instance, asset.key, partition)
        )
    return versions


def _training_data(context: dg.AssetExecutionContext) -> dict[str, dict]:
    """Per split, what the token manifests hold (read through the shared reader; no shard is opened): tokens, shards,
    the files they came from, and the vocabulary version their ids are in."""
    data = {}
    for contract in (TRAIN_TOKENS, VALIDATION_TOKENS, TEST_TOKENS):
        tokens = context.resources.io_manager.stored(contract)
        if tokens is not None:
            data[contract.key.path[-1]] = {
                "tokens": tokens.tokens,
                "shards": len(tokens.shards),
                "files": sorted({shard.file for shard in tokens.shards}),
                "vocabulary_version": tokens.vocabulary_version,
            }
    return data


def _model_card_markdown(card: dict) -> str:
    metrics = card["metrics"]["model"]
    bigram = card["metrics"]["baselines"]["bigram"]
    return "\n".join(
        [
            f"# Model card — release {card['version']}",
            "",
            "A character-level decoder-only transformer trained on the pipeline's corpus; the data versions of its "
            "inputs are in `model_card.json` (`upstream_data_versions`).",
            "",
            f"Experiment **{card['experiment']['name']}**: {card['experiment']['why']}.",
            "",
            "| metric (test split) | model | bigram baseline |",
            "|---|---|---|",
            f"| loss (nats/char) | {metrics['loss']:.4f} | {bigram['loss']:.4f} |",
            f"| perplexity | {metrics['perplexity']:.3f} | {bigram['perplexity']:.3f} |",
            f"| bits per character | {metrics['bits_per_character']:.3f} | {bigram['bits_per_character']:.3f} |",
            f"| next-char accuracy | {metrics['accuracy']:.1%} | {bigram['accuracy']:.1%} |",
            "",
            f"Validation loss at training: {card['training']['validation_loss']:.4f}.",
            f"`model.onnx` sha256: `{card['model_sha256']}`",
            "",
            "```json",
            json.dumps(card["model_config"], indent=2),
            "```",
        ]
    )


@dg.asset(
    key=RELEASE_KEY,
    group_name="deploy",
    ins={
        "onnx_model": dg.AssetIn(key=ONNX_MODEL_KEY),
        "vocabulary": dg.AssetIn(key=VOCABULARY.key),
        "leaderboard": dg.AssetIn(key=LEADERBOARD_KEY),
    },
    io_manager_key=IO_MANAGER_KEY,
    metadata=stored_as(StorageFormat.JSON),
    # 2: the card describes the cache signature; 3: and the experiment that won, and why; 4: parity, chat template
    code_version="4",
    # Not in the leaderboard's own tick: with the export of its new winner, in the tick after.
    automation_condition=ON_UPSTREAM_DATA_CHANGE,
    # A shared or network filesystem can fail transiently; each attempt writes a new staging folder.
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
    kinds={"onnx", "json"},
    owners=["team:ml"],
)
def release(
    context: dg.AssetExecutionContext,
    output_folder: OutputFolderResource,
    onnx_model: bytes,
    vocabulary: dict,
    leaderboard: dict,
) -> dict:
    """A new immutable release folder: model.onnx, vocabulary.json, chat_template.jinja, model_card.json/.md (the
    winning experiment and why, config, metrics, sha256, the parity measured at export, the chat template's turn
    end, upstream data versions). Earlier releases are kept."""
    from deploy_code_location.chat_template import CHAT_TEMPLATE_FILE, DEFAULT_STOP, default_template
    from deploy_code_location.release_checks import PARITY_KEY, parity_record

    parity = _check_export_matches(context, leaderboard)
    evaluation_report = leaderboard["winner_report"]
    model_sha = sha256_hex(onnx_model)
    version = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{model_sha[:8]}"
    card = {
        "version": version,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "model_sha256": model_sha,
        "experiment": {"name": leaderboard["winner"], "why": leaderboard["why"], "leaderboard": leaderboard["rows"]},
        "model_config": evaluation_report["model_config"],
        "training": evaluation_report["training_summary"],
        "metrics": {"model": evaluation_report["model"], "baselines": evaluation_report["baselines"]},
        "samples": evaluation_report["samples"],
        "upstream_data_versions": _upstream_data_versions(context, leaderboard["winner"]),
        "data": _training_data(context),
        "dagster_run_id": context.run.run_id,
        "onnx": {"opset": OPSET, **SIGNATURE},
        "checks": {PARITY_KEY: parity_record(parity)} if parity else {},
        "chat": {"template": CHAT_TEMPLATE_FILE, "stop": list(DEFAULT_STOP)},
    }
    from deploy_code_location.release_store import write_release

    folder = write_release(
        output_folder.path,
        version,
        {
            "model.onnx": onnx_model,
            "vocabulary.json": json.dumps(vocabulary, indent=2, ensure_ascii=False).encode("utf-8"),
            "model_card.json": json.dumps(card, indent=2, ensure_ascii=False).encode("utf-8"),
            "model_card.md": _model_card_markdown(card).encode("utf-8"),
            CHAT_TEMPLATE_FILE: default_template().encode("utf-8"),
        },
    )
    context.add_output_metadata(
        {
            "version": version,
            "folder": dg.MetadataValue.path(str(folder)),
            "model_card": dg.MetadataValue.md(_model_card_markdown(card)),
            "model_sha256": model_sha,
            "experiment": leaderboard["winner"],
        }
    )
    return {"version": version, "path": str(folder), "model_sha256": model_sha}


@dg.asset(
    key=LATEST_RELEASE_KEY,
    group_name="deploy",
    ins={"release": dg.AssetIn(key=RELEASE_KEY)},
    io_manager_key=IO_MANAGER_KEY,
    metadata=stored_as(StorageFormat.JSON),
    code_version="1",
    automation_condition=ON_UPSTREAM_CHANGE,
    kinds={"json"},
)
def latest_release(context: dg.AssetExecutionContext, output_folder: OutputFolderResource, release: dict) -> dict:
    """`latest.json`, moved to the new release. Runs only after every blocking check upstream passed."""
    from deploy_code_location.release_store import point_latest_to

    pointer = point_latest_to(output_folder.path, release["version"], release["model_sha256"])
    context.add_output_metadata(
        {
            "version": pointer["version"],
            "pointer": dg.MetadataValue.path(str(output_folder.path / "latest.json")),
            SUMMARY_METADATA_KEY: f"latest release: {output_folder.path / pointer['path']}",
        }
    )
    return pointer
