"""Holds the generator of the release being served and swaps in a new release without a restart."""

import json
import logging
import threading
import time
from pathlib import Path

from deploy_code_location.onnx_generator import OnnxGenerator
from deploy_code_location.release_store import LATEST_POINTER, ReleaseNotFoundError, resolve_release
from shared_code_location.contract.storage import MissingBucketError, StorageError, check_bucket, storage_errors

logger = logging.getLogger(__name__)


class ReleaseWatcher:
    """Serves a fixed release, or follows `latest.json` when none is named, in a folder or object storage.

    A new release is loaded completely before it replaces the old one; requests in flight keep the generator they
    started with, so a swap never fails a request. Following `latest.json` before there is any release is allowed:
    the server is live but not ready until the first release appears (a bucket that does not exist yet counts as
    no release yet: its first write creates it). Storage that cannot be used at start (unreachable, access denied)
    is a `StorageError`; later, while a release is served, it is logged and the release goes on being served.
    """

    def __init__(self, output_dir: Path, release: str | None = None, poll_seconds: float = 1.0):
        self.output_dir = output_dir
        self.follow_latest = release is None
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._last_poll = 0.0
        self._pointer: str | None = None  # the text of latest.json last acted on
        self._poll_error: str | None = None
        self.generator: OnnxGenerator | None = None
        #: Why there is no release to serve yet, for /ready.
        self.waiting_for = f"no release in {output_dir} yet: run the pipeline to publish one"
        try:
            self._pointer = self._read_pointer()
            self.generator = OnnxGenerator(resolve_release(output_dir, release))
        except (ReleaseNotFoundError, MissingBucketError) as error:
            if not self.follow_latest:
                raise
            if isinstance(error, MissingBucketError):
                self.waiting_for = f"{error}; waiting for the pipeline's first release to create it"
            logger.warning("not ready until latest.json points to a release: %s", self.waiting_for)

    def _read_pointer(self) -> str | None:
        pointer = self.output_dir / LATEST_POINTER
        with storage_errors(pointer):
            try:
                return pointer.read_text(encoding="utf-8")
            except FileNotFoundError:
                check_bucket(pointer)
                return None

    def current(self) -> OnnxGenerator:
        """The generator to use for one request (checks for a new release at most once per `poll_seconds`);
        `ReleaseNotFoundError` while there is none."""
        if self.follow_latest and time.monotonic() - self._last_poll >= self.poll_seconds:
            self.refresh()
        if self.generator is None:
            raise ReleaseNotFoundError(self.waiting_for)
        return self.generator

    def refresh(self) -> bool:
        """Load the release `latest.json` points to if it changed; True if a new release is now served."""
        if not self._lock.acquire(blocking=False):
            return False  # another request is already loading it; keep serving the current one
        text = None
        try:
            self._last_poll = time.monotonic()
            try:
                text = self._read_pointer()
            except MissingBucketError:
                return False  # still no release: the bucket appears with the first one
            self._poll_error = None
            if text is None or text == self._pointer:
                return False
            version = json.loads(text)["version"]
            if self.generator is not None and version == self.generator.version:
                self._pointer = text
                return False
            new_generator = OnnxGenerator(resolve_release(self.output_dir, version))
            self.generator, self._pointer = new_generator, text
            logger.info("now serving release %s", new_generator.version)
            return True
        except StorageError as error:  # say it once, not once a second
            if str(error) != self._poll_error:
                logger.error("cannot read the releases (still serving %s): %s", self.version, error)
            self._poll_error = str(error)
            return False
        except Exception:  # a half-written or broken release must not take the server down
            logger.exception("could not load the new release; still serving %s", self.version)
            self._pointer = text
            return False
        finally:
            self._lock.release()

    @property
    def version(self) -> str | None:
        """The release being served, None before the first."""
        return self.generator.version if self.generator is not None else None
