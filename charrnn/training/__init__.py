"""Training: the truncated-BPTT trainer (no I/O; callbacks), the run directory around it, torchrun/DDP, and the learning-curve views of a run."""
