"""The Tune tab: LoRA tuning on the reviewers' labels, then the tuned model against the base."""
