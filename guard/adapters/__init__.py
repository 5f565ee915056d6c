"""Guard Lab's engine in the shapes other tools already speak.

- `messages`: OpenAI-style chat messages and moderation `input` (text and `image_url` parts
  with data URLs) as a validated `Conversation`;
- `guardbench`: the `moderate(conversations) -> list[float]` callback GuardBench evaluates;
- `firewall`: LlamaFirewall-style scanners (`scan(...) -> (score, decision, reason)`) for
  Llama Guard and Prompt Guard, to put the engine inside an agent loop.

Importing this package imports neither torch nor gradio; the engines are passed in.
"""
