"""`python -m deploy_code_location.releases list | promote VERSION | rollback`: the releases an operator manages
(`python scripts/cli.py releases ...` runs it in this location's venv).

- `list`: every complete release, oldest first: version, experiment, validation and test loss, when it was made,
  whether its card records a passing parity check, and which one is live.
- `promote VERSION`: move `latest.json` to that release, after it passes its checks (`release_checks`).
- `rollback`: move `latest.json` back to the release that was live before (its `history`), after the same checks.

`latest.json` moves in one atomic write, in a folder or object storage; a running server follows it within a second
and swaps without failing a request in flight. A release that fails a check is refused with the reasons, and
nothing moves.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploy_code_location.release_checks import PARITY_KEY, release_problems
from deploy_code_location.release_store import (
    RELEASES_DIR,
    ReleaseNotFoundError,
    list_releases,
    point_latest_to,
    read_card,
    read_pointer,
    rollback_target,
)
from shared_code_location import settings
from shared_code_location.contract.storage import StorageError, storage_path


class RefusedError(RuntimeError):
    """The release fails its checks: nothing was moved."""


def _parity(card: dict) -> str:
    parity = (card.get("checks") or {}).get(PARITY_KEY)
    if parity is None:
        return "none"
    return f"{parity['max_abs_difference']:.1e}" if parity.get("passed") else "FAILED"


def list_table(output_dir: Path) -> str:
    """The releases as a table, the live one marked `*`."""
    pointer = read_pointer(output_dir)
    live = pointer["version"] if pointer else None
    rows = [("", "VERSION", "EXPERIMENT", "VAL LOSS", "TEST LOSS", "PARITY", "CREATED (UTC)")]
    for version in list_releases(output_dir):
        card = read_card(output_dir, version)
        experiment = (card.get("experiment") or {}).get("name", "?")
        validation = (card.get("training") or {}).get("validation_loss")
        test = ((card.get("metrics") or {}).get("model") or {}).get("loss")
        created = (card.get("created_at") or "?")[:19].replace("T", " ")
        loss = lambda value: "-" if value is None else f"{value:.4f}"  # noqa: E731
        rows.append(("*" if version == live else "", version, experiment, loss(validation), loss(test),
                     _parity(card), created))  # fmt: skip
    if len(rows) == 1:
        return f"no releases in {output_dir} yet: run `python scripts/cli.py run` to publish one"
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    footer = f"live: {live} (* above)" if live else f"live: none ({output_dir} has no latest.json)"
    return "\n".join([*lines, footer])


def _move(output_dir: Path, version: str, history: list[str] | None, verb: str, done: str) -> str:
    card = read_card(output_dir, version)
    problems = release_problems(output_dir / RELEASES_DIR / version)
    if problems:
        reasons = "\n".join(f"  - {problem}" for problem in problems)
        raise RefusedError(f"refusing to {verb} {version}: it fails its checks; latest.json is unchanged:\n{reasons}")
    before = read_pointer(output_dir)
    point_latest_to(output_dir, version, card["model_sha256"], history)
    was = before["version"] if before else "none"
    return f"{done} {version} (was {was}): latest.json moved; a running server swaps to it within a second"


def promote(output_dir: Path, version: str) -> str:
    """Make `version` the live release, once it passes its checks."""
    return _move(output_dir, version, None, "promote", "promoted")


def rollback(output_dir: Path) -> str:
    """Make the release that was live before the current one live again, once it passes its checks."""
    version, history = rollback_target(output_dir)
    return _move(output_dir, version, history, "roll back to", "rolled back to")


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, act, print the outcome; 1 with the reason when refused or impossible."""
    parser = argparse.ArgumentParser(prog="releases", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=settings.OUTPUT_DIR.get(), help=settings.OUTPUT_DIR.description)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("list", help="list the releases, the live one marked")
    commands.add_parser("promote", help="make VERSION live (after its checks)").add_argument("version")
    commands.add_parser("rollback", help="make the previously live release live again (after its checks)")
    args = parser.parse_args(argv)
    try:
        output_dir = storage_path(args.output_dir)
        if args.command == "promote":
            print(promote(output_dir, args.version))
        elif args.command == "rollback":
            print(rollback(output_dir))
        else:
            print(list_table(output_dir))
    except (RefusedError, ReleaseNotFoundError, StorageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
