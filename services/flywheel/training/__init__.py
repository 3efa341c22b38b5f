"""The training service: labeled examples in, gated and announced model versions out."""
