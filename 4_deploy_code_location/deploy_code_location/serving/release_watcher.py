"""Holds the generator of the release being served and swaps in a new release without a restart."""

import json
import logging
import threading
import time
from pathlib import Path

from deploy_code_location.onnx_generator import OnnxGenerator
from deploy_code_location.release_store import LATEST_POINTER, ReleaseNotFoundError, resolve_release

logger = logging.getLogger(__name__)


class ReleaseWatcher:
    """Serves a fixed release, or follows `latest.json` when none is named.

    A new release is loaded completely before it replaces the old one; requests in flight keep the generator they
    started with, so a swap never fails a request. Following `latest.json` before there is any release is allowed:
    the server is live but not ready until the first release appears.
    """

    def __init__(self, output_dir: Path, release: str | None = None, poll_seconds: float = 1.0):
        self.output_dir = output_dir
        self.follow_latest = release is None
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._last_poll = 0.0
        self._pointer_state: tuple[float, str] | None = None
        self.generator: OnnxGenerator | None = None
        try:
            self.generator = OnnxGenerator(resolve_release(output_dir, release))
            self._pointer_state = self._read_pointer_state()
        except ReleaseNotFoundError:
            if not self.follow_latest:
                raise
            logger.warning("no release in %s yet: not ready until latest.json points to one", output_dir)

    def _read_pointer_state(self) -> tuple[float, str] | None:
        pointer = self.output_dir / LATEST_POINTER
        try:
            return pointer.stat().st_mtime, pointer.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def current(self) -> OnnxGenerator:
        """The generator to use for one request (checks for a new release at most once per `poll_seconds`);
        `ReleaseNotFoundError` while there is none."""
        if self.follow_latest and time.monotonic() - self._last_poll >= self.poll_seconds:
            self.refresh()
        if self.generator is None:
            raise ReleaseNotFoundError(f"no release in {self.output_dir} yet: run the pipeline to publish one")
        return self.generator

    def refresh(self) -> bool:
        """Load the release `latest.json` points to if it changed; True if a new release is now served."""
        if not self._lock.acquire(blocking=False):
            return False  # another request is already loading it; keep serving the current one
        try:
            self._last_poll = time.monotonic()
            state = self._read_pointer_state()
            if state is None or state == self._pointer_state:
                return False
            folder = self.output_dir / json.loads(state[1])["path"]
            if self.generator is not None and folder.resolve() == self.generator.release_dir.resolve():
                self._pointer_state = state
                return False
            new_generator = OnnxGenerator(folder)
            self.generator, self._pointer_state = new_generator, state
            logger.info("now serving release %s", new_generator.version)
            return True
        except Exception:  # a half-written or broken release must not take the server down
            logger.exception("could not load the new release; still serving %s", self.version)
            return False
        finally:
            self._lock.release()

    @property
    def version(self) -> str | None:
        """The release being served, None before the first."""
        return self.generator.version if self.generator is not None else None
