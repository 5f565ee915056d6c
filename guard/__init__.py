"""Guard Lab's engine: faithful Llama Guard and Prompt Guard runners.

Importing the package is cheap: torch and transformers load only with the runners.
"""

from guard.core.categories import Category, Family, categories_for
from guard.core.conversation import (
                     Conversation,
                     Turn,
                     assistant,
                     from_messages,
                     load_conversation_file,
                     user,
)
from guard.core.errors import (
                     ContextTooLong,
                     GuardError,
                     InvalidCategories,
                     InvalidConversation,
                     InvalidImage,
                     ModelLoadError,
                     TooLarge,
)
from guard.core.prompts import CustomCategory, plan, render
from guard.core.verdict import DEFAULT_THRESHOLD, CategoryHit, Verdict, parse_answer

__all__ = [
    "Category", "CategoryHit", "ContextTooLong", "Conversation", "CustomCategory",
    "DEFAULT_THRESHOLD", "Family", "GuardError", "InvalidCategories", "InvalidConversation",
    "InvalidImage", "ModelLoadError", "TooLarge", "Turn", "Verdict", "assistant", "categories_for",
    "from_messages", "load_conversation_file", "parse_answer", "plan", "render", "user",
]
