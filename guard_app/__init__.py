"""The Gradio pieces of Guard Lab's app; the `guard` and `labels` packages never import this."""
