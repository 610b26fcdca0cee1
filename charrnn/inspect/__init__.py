"""Looking inside a trained network: the recurrent layers replayed one step at a time from their
own weights (gates, hidden and cell states), gradients through time, gate saturation, single
units over text and the search for units that follow the text's structure, state dumps, and
what the explorer page shows of one text (``explain``).
Reads a checkpoint through ``charrnn.model.loading`` like generation and export; never imports
training."""
