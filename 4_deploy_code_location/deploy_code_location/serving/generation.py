"""What completions and chat completions share beneath their routers (as vLLM's `OpenAIServing`): a request's prompts
and `SamplingParams` become one `DecodingJob` (every choice with its own sampler and, for structured output, its own
grammar matcher), which the batcher decodes; the choices come back whole (`choices()`) or as server-sent events
(`events()`), each route writing them in its own shape.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable

from deploy_code_location.onnx_generator import OnnxGenerator
from deploy_code_location.sampling import SamplingParams
from deploy_code_location.serving.choices import DONE, ChunkWriter, usage
from deploy_code_location.serving.errors import ApiError
from deploy_code_location.serving.event_stream import EventStreamResponse
from deploy_code_location.serving.openai_models import Usage
from deploy_code_location.serving.state import ServerState
from deploy_code_location.serving.streams import Choice, DecodingJob, Piece
from deploy_code_location.structured_output import GrammarError

#: What a route turns one hand-over of the job into: its events, as bytes.
Formatter = Callable[[list[tuple[int, Piece | None]]], Iterable[bytes]]


class Generation:
    """One request's decoding: `prompts` (text), each sampled `params.n` times with `params`; started at once (a 503
    when the queue is full). `constraint_param` names the request field that carried a grammar, for its errors."""

    def __init__(
        self,
        server: ServerState,
        generator: OnnxGenerator,
        prompts: list[str],
        params: SamplingParams,
        streaming: bool,
        constraint_param: str = "structured_outputs",
    ):
        self.server, self.generator, self.params = server, generator, params
        vocab = generator.tokenizer.vocab_size
        if outside := sorted(token for token in params.logit_bias if token >= vocab):
            message = (
                f"logit_bias names token ids {outside[:5]} outside the vocabulary of {vocab} (ids 0 to {vocab - 1})"
            )
            raise ApiError(400, message, "logit_bias", "invalid_value")
        grammar = None
        if params.constraint is not None:
            try:
                grammar = params.constraint.compile(generator.tokenizer)
            except GrammarError as error:
                raise ApiError(400, str(error), constraint_param, "invalid_value") from error
        choices, self.prompt_tokens = [], 0
        for prompt in prompts:
            ids, _ = generator.encode_prompt(prompt)
            self.prompt_tokens += len(ids)
            choices += [(ids, params.sampler(choice, ids, vocab, grammar)) for choice in range(params.n)]
        self.job = DecodingJob(
            server.batcher,
            generator,
            server.waker,
            choices,
            params.max_tokens,
            list(params.stop),
            params.logprobs,
            score_prompt=params.score_prompt,
            streaming=streaming,
            min_tokens=params.min_tokens,
        )
        server.start(self.job)
        self._started = time.perf_counter()

    def header(self, id_prefix: str, object_name: str) -> dict[str, object]:
        """The fields every response and chunk of this request shares (see `ServerState.response_header`)."""
        return self.server.response_header(id_prefix, object_name, self.generator)

    @property
    def usage(self) -> Usage:
        """Token counts so far (each prompt once, every choice's generated tokens)."""
        return usage(self.job, self.prompt_tokens)

    async def choices(self) -> list[Choice]:
        """Every choice, once all ended."""
        choices = await self.job.wait()
        self.server.metrics.finished(self.job, time.perf_counter() - self._started)
        return choices

    def stream(self, writer: ChunkWriter, formatter: Formatter, include_usage: bool, first: bytes = b""):
        """The server-sent events response: `first`, then what `formatter` makes of each hand-over (every event of
        one decoding step in one write), then the usage chunk if asked, then `[DONE]`."""
        return EventStreamResponse(
            self._events(writer, formatter, include_usage, first), self.job, self.server.stall_watch
        )

    async def _events(
        self, writer: ChunkWriter, formatter: Formatter, include_usage: bool, first: bytes
    ) -> AsyncIterator[bytes]:
        if first:
            yield first
        async for items in self.job.updates():
            yield b"".join(formatter(items))
        self.server.metrics.finished(self.job, time.perf_counter() - self._started)
        yield (writer.usage_event(self.usage) if include_usage else b"") + DONE
