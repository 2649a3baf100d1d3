"""Token counts for sources that record only text.

No tokenizer for the recorded models is available offline, so text is counted
at a stated characters-per-token ratio; the ratio goes into the trace header
(``token_counting: "chars-per-token"``, ``chars_per_token``). Each piece of
text (one message, one tool result) is rounded up on its own, so a prompt is
exactly the sum of the pieces it holds and the history-only-grows rule of
trace v1 holds by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

# OpenAI's rule of thumb for English text with GPT tokenizers. The
# mini-swe-agent runs give about 3.5 for DeepSeek's tokenizer on code-heavy
# SWE-bench text (see traces/README.md); gpt-4o's larger vocabulary packs more
# characters per token, so the default stays at 4.0.
DEFAULT_CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True, slots=True)
class CharCounter:
    """Counts tokens as ceil(characters / ``chars_per_token``)."""

    chars_per_token: float = DEFAULT_CHARS_PER_TOKEN

    def count(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token) if text else 0


def fit_chars_per_token(samples: Iterable[tuple[int, int]]) -> float | None:
    """Ratio of total characters to total tokens over ``(chars, tokens)`` samples.

    None when there are no tokens to divide by.
    """
    chars = tokens = 0
    for sample_chars, sample_tokens in samples:
        chars += sample_chars
        tokens += sample_tokens
    return chars / tokens if tokens > 0 else None


def text_of(value: Any) -> str:
    """Flatten the text in a chat content value: a string, or a list of parts with ``text``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(text_of(part) for part in value)
    if isinstance(value, dict):
        return text_of(value.get("text"))
    return ""
