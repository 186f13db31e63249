"""`python -m deploy_code_location.serving`: serve a release over HTTP (loopback unless told otherwise).

SIGTERM or Ctrl-C stops accepting connections and lets the requests in flight finish (up to `--drain-seconds`).
API keys (`--api-key`, repeatable, and `ML_PIPELINE_API_KEYS`, comma-separated: both count) close the model's
routes to requests without one; without a key on an address beyond loopback, the server says loudly that anyone who
reaches the port can use it.
"""

import argparse
import logging
import sys

from shared_code_location import settings


def main() -> None:
    """Parse arguments and run uvicorn."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--release", help="release version or folder (default: follow latest.json)")
    parser.add_argument("--output-dir", default=settings.OUTPUT_DIR.get(), help=settings.OUTPUT_DIR.description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model-name", default=None, help="the model id under /v1 (default: char-transformer)")
    parser.add_argument("--max-batch", type=int, default=64, help="sequences decoding together at most")
    parser.add_argument("--max-queue", type=int, default=256, help="requests waiting at most; more get 503")
    parser.add_argument(
        "--stall-seconds", type=float, default=10.0, help="a stream whose client stops reading this long is cancelled"
    )
    parser.add_argument("--drain-seconds", type=float, default=30.0, help="how long shutdown waits for requests")
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        help=f"a key clients must send as `Authorization: Bearer <key>` (repeatable; also {settings.API_KEYS.name}, "
        "which keeps keys off the command line)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from deploy_code_location.serving.api_keys import is_loopback, parse_keys

    api_keys = parse_keys(args.api_key, settings.API_KEYS.get())
    if not api_keys and not is_loopback(args.host):
        print(
            f"WARNING: serving on {args.host} without an API key: anyone who reaches port {args.port} can use the "
            f"model. Set {settings.API_KEYS.name} (or --api-key) to require `Authorization: Bearer <key>`.",
            file=sys.stderr,
            flush=True,
        )

    import uvicorn

    from deploy_code_location.release_store import ReleaseNotFoundError
    from deploy_code_location.serving.app import DEFAULT_MODEL_NAME, create_app
    from shared_code_location.contract.storage import StorageError, storage_path

    try:
        app = create_app(
            storage_path(args.output_dir),
            args.release,
            model_name=args.model_name or DEFAULT_MODEL_NAME,
            max_batch=args.max_batch,
            max_queue=args.max_queue,
            stall_seconds=args.stall_seconds,
            api_keys=api_keys,
        )
    except (ReleaseNotFoundError, StorageError) as error:
        raise SystemExit(f"error: {error}") from None
    version = app.state.watcher.version or "none yet (waiting for latest.json)"
    keys = f"{len(api_keys)} API key{'s' * (len(api_keys) != 1)}" if api_keys else "no API key"
    print(f"serving release {version} on http://{args.host}:{args.port} with {keys} (playground: /, docs: /docs)",
          flush=True)  # fmt: skip
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=args.drain_seconds,
    )


if __name__ == "__main__":
    main()
