"""vLLM's `/tokenize`, `/detokenize` and `/tokenizer_info`: a character model's ids and its tokenizer's configuration,
for clients that count or align tokens (lm-evaluation-harness's `tokenizer_backend=remote` uses all three)."""

from __future__ import annotations

from fastapi import APIRouter, Body

from deploy_code_location.serving.api_models import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfo,
)
from deploy_code_location.serving.errors import ApiError, documented
from deploy_code_location.serving.routes.openai_chat import render_messages
from deploy_code_location.serving.state import Server
from shared_code_location.model.tokenizer import UNKNOWN_ID

router = APIRouter(tags=["Tokens"])


@router.get("/tokenizer_info", response_model=TokenizerInfo, responses=documented((401, 503)))
def tokenizer_info(server: Server) -> TokenizerInfo:
    """The tokenizer's configuration: its class, the chat template, its special tokens (none but the unknown
    symbol), the context length and the vocabulary size."""
    generator = server.generator()
    return TokenizerInfo(
        chat_template=generator.chat_template.source,
        model_max_length=generator.block_size,
        vocab_size=generator.tokenizer.vocab_size,
        unk_token=generator.tokenizer.symbols[UNKNOWN_ID],
    )


@router.post("/tokenize", response_model=TokenizeResponse, responses=documented((400, 401, 404, 413, 422, 500, 503)))
def tokenize(server: Server, body: TokenizeRequest = Body()) -> TokenizeResponse:
    """The ids of `prompt`, or of `messages` rendered with the release's chat template (one of the two)."""
    generator = server.generator()
    server.check_model(body.model, generator)
    if body.messages is None:
        text = body.prompt
    else:
        text = render_messages(generator, body.messages, body.add_generation_prompt)
    ids = generator.tokenizer.encode(text).tolist()
    strings = list(generator.tokenizer.decode(ids)) if body.return_token_strs else None
    return TokenizeResponse(count=len(ids), max_model_len=generator.block_size, tokens=ids, token_strs=strings)


@router.post("/detokenize", response_model=DetokenizeResponse, responses=documented((400, 401, 404, 413, 422, 503)))
def detokenize(server: Server, body: DetokenizeRequest = Body()) -> DetokenizeResponse:
    """The text of `tokens`; 422 for an id outside the vocabulary."""
    generator = server.generator()
    server.check_model(body.model, generator)
    vocab = generator.tokenizer.vocab_size
    if outside := [t for t in body.tokens if t >= vocab]:
        raise ApiError(422, f"token ids {outside[:5]} are outside the vocabulary of {vocab}", "tokens", "value_error")
    return DetokenizeResponse(prompt=generator.tokenizer.decode(body.tokens))
