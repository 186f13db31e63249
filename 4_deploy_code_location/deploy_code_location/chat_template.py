"""The chat template of a release: how chat messages become the one prompt this base model continues.

Each release ships its template as `chat_template.jinja` and its turn end in the model card (`chat.stop`), written by
`deploy/release`; a release without them (an older one) is served with the default here. Templates are rendered as
`transformers` renders them (Jinja2 in a sandbox, `trim_blocks` and `lstrip_blocks`, `messages` and
`add_generation_prompt`, `raise_exception` and `tojson`), so a template written for a Hugging Face model works.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

CHAT_TEMPLATE_FILE = "chat_template.jinja"
#: Where a speech ends: a blank line, before the next speaker's name.
DEFAULT_STOP = ("\n\n",)


class ChatTemplateError(ValueError):
    """The template could not render these messages (its own `raise_exception`, or an error in it)."""


def default_template() -> str:
    """The default template: a play's speaker turns (`ROMEO:` asks, `JULIET:` answers)."""
    return resources.files("deploy_code_location").joinpath(CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")


class ChatTemplate:
    """A compiled chat template and the stop strings that end the model's turn."""

    def __init__(self, source: str, stop: tuple[str, ...] = DEFAULT_STOP, origin: str = "default"):
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise ChatTemplateError(message)

        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        environment.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
        environment.globals["raise_exception"] = raise_exception
        try:
            self._template = environment.from_string(source)
        except TemplateError as error:
            raise ValueError(f"chat template {origin} does not compile: {error}") from error
        self.source, self.stop, self.origin = source, stop, origin
        self._errors = TemplateError

    @classmethod
    def of_release(cls, release_dir: Path, card: dict[str, Any]) -> ChatTemplate:
        """The release's template (`chat_template.jinja` and the card's `chat.stop`), else the default."""
        path = release_dir / CHAT_TEMPLATE_FILE
        chat = card.get("chat") or {}
        stop = tuple(chat.get("stop", DEFAULT_STOP))
        if chat.get("template") == CHAT_TEMPLATE_FILE or path.exists():
            return cls(path.read_text(encoding="utf-8"), stop, origin=str(path))
        return cls(default_template(), stop)

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        """The prompt for `messages` (dicts with `role`, `content` and maybe `name`)."""
        try:
            return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt, tools=None)
        except ChatTemplateError:
            raise
        except (self._errors, TypeError, ValueError, KeyError) as error:
            raise ChatTemplateError(f"the chat template failed on these messages: {error}") from error
