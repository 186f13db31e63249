"""`python -m deploy_code_location.serving`: serve a release over HTTP (loopback unless told otherwise)."""

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
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import uvicorn

    from deploy_code_location.release_store import ReleaseNotFoundError
    from deploy_code_location.serving.app import create_app

    try:
        app = create_app(settings.resolve_project_path(args.output_dir), args.release)
    except ReleaseNotFoundError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"serving release {app.state.watcher.generator.version} on http://{args.host}:{args.port} (docs: /docs)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
