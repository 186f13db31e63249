"""`python -m deploy_code_location.serving`: serve a release over HTTP (loopback unless told otherwise).

SIGTERM or Ctrl-C stops accepting connections and lets the requests in flight finish (up to `--drain-seconds`).
"""

import argparse
import logging

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
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

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
        )
    except (ReleaseNotFoundError, StorageError) as error:
        raise SystemExit(f"error: {error}") from None
    version = app.state.watcher.version or "none yet (waiting for latest.json)"
    print(f"serving release {version} on http://{args.host}:{args.port} (playground: /, docs: /docs)", flush=True)
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
