"""Making text from a trained model: one sampling path, the steppers (eager and fast CPU), beam search, the interactive loop, the copying check."""
