"""Text made safe for where it is shown: Markdown (GitHub) and a terminal. No imports beyond re.

Every string from a report is escaped wherever it lands in Markdown, so a probe name such as
`<script>` or a value holding `</details>` renders as text, never as HTML. Text printed to a
terminal loses control characters, so a value cannot move the cursor or retitle the window.
"""

from __future__ import annotations

import re
from typing import Any

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# A sentence ends at . ! or ? followed by a space and a capital (so "1.52x" and "e.g. the" do not end one).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def md_text(x: Any) -> str:
    """Report text inside Markdown: angle brackets and ampersands escaped so no value can open HTML."""
    return str("" if x is None else x).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def md_cell(x: Any) -> str:
    """A value safe inside a Markdown table cell: no pipes, no line breaks, no HTML."""
    return md_text(x).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def md_code(x: Any) -> str:
    """Text for a fenced code block: backticks replaced so the value cannot close the fence, and HTML
    escaped too, because a renderer that does not know the fence (or a reader grepping) must see no tag."""
    return md_text(x).replace("`", "\\u0060")


def terminal_safe(x: Any) -> str:
    """Text for a terminal: control characters (escape sequences, carriage returns) shown as \\xNN."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", str(x))


def first_sentence(x: Any) -> str:
    """The first sentence of a text (the whole text when it is one): a verdict at a glance."""
    text = str("" if x is None else x).strip()
    return _SENTENCE_END.split(text, maxsplit=1)[0]
