"""The domain: conversations, images, categories, prompts, verdicts, limits, datasets, errors.

Plain Python (and Pillow for images): no torch, no gradio, no SQL. Every other folder builds on it.
"""
