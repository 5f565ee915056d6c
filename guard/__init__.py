"""Guard Lab's engine: faithful Llama Guard and Prompt Guard runners.

Importing the package is cheap: torch and transformers load only with the runners.
"""

from .categories import Category, Family, categories_for
from .conversation import Conversation, Turn, assistant, from_messages, load_conversation_file, user
from .errors import (
                     ContextTooLong,
                     GuardError,
                     InvalidCategories,
                     InvalidConversation,
                     InvalidImage,
                     ModelLoadError,
                     TooLarge,
)
from .prompts import CustomCategory, plan, render
from .verdict import DEFAULT_THRESHOLD, CategoryHit, Verdict, parse_answer

__all__ = [
    "Category", "CategoryHit", "ContextTooLong", "Conversation", "CustomCategory",
    "DEFAULT_THRESHOLD", "Family", "GuardError", "InvalidCategories", "InvalidConversation",
    "InvalidImage", "ModelLoadError", "TooLarge", "Turn", "Verdict", "assistant", "categories_for",
    "from_messages", "load_conversation_file", "parse_answer", "plan", "render", "user",
]
