"""The feedback service: ground truth in, exactly one labeled example per prediction out."""
