"""Files a model can be shipped as, for use without charrnn."""
