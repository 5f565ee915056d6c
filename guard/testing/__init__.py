"""The tiny offline models: the same architectures as the real guards, built and trained in seconds."""
