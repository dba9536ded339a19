"""The Messages API's vocabulary that both directions need: the Anthropic-kind adapter
(OpenAI in front, Anthropic behind) and the `/v1/messages` door (Anthropic in front, any kind
behind) read the same tables, one way each."""

from __future__ import annotations

# stop_reason → finish_reason
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# finish_reason → stop_reason: the first stop_reason of each finish_reason above.
STOP_REASONS = {finish: stop for stop, finish in reversed(FINISH_REASONS.items())}

# OpenAI's string tool_choice → the Messages API's tool_choice type.
TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}
TOOL_CHOICE_NAMES = {kind: choice for choice, kind in TOOL_CHOICES.items()}

IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
