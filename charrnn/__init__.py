"""charrnn: character-level recurrent language models you can train, sample and resume exactly."""

__version__ = "0.1.0"
