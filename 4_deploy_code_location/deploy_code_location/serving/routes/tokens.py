"""vLLM's `/tokenize` and `/detokenize`: a character model's ids, for clients that count or align tokens."""

from __future__ import annotations

from fastapi import APIRouter, Body

from deploy_code_location.serving.api_models import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from deploy_code_location.serving.errors import ApiError, documented
from deploy_code_location.serving.routes.openai_chat import render_messages
from deploy_code_location.serving.state import Server

router = APIRouter(tags=["Tokens"])


@router.post("/tokenize", response_model=TokenizeResponse, responses=documented((400, 404, 413, 422, 500, 503)))
def tokenize(server: Server, body: TokenizeRequest = Body()) -> TokenizeResponse:
    """The ids of `prompt`, or of `messages` rendered with the release's chat template (one of the two)."""
    generator = server.generator()
    server.check_model(body.model, generator)
    if (body.prompt is None) == (body.messages is None):
        raise ApiError(422, "give either prompt or messages", param="prompt", code="value_error")
    if body.messages is None:
        text = body.prompt
    else:
        text = render_messages(generator, body.messages, body.add_generation_prompt)
    ids = generator.tokenizer.encode(text).tolist()
    strings = list(generator.tokenizer.decode(ids)) if body.return_token_strs else None
    return TokenizeResponse(count=len(ids), max_model_len=generator.block_size, tokens=ids, token_strs=strings)


@router.post("/detokenize", response_model=DetokenizeResponse, responses=documented((400, 404, 413, 422, 503)))
def detokenize(server: Server, body: DetokenizeRequest = Body()) -> DetokenizeResponse:
    """The text of `tokens`; 422 for an id outside the vocabulary."""
    generator = server.generator()
    server.check_model(body.model, generator)
    vocab = generator.tokenizer.vocab_size
    if outside := [t for t in body.tokens if t >= vocab]:
        raise ApiError(422, f"token ids {outside[:5]} are outside the vocabulary of {vocab}", "tokens", "value_error")
    return DetokenizeResponse(prompt=generator.tokenizer.decode(body.tokens))
