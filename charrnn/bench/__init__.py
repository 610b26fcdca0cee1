"""`charrnn bench`: speeds measured against references in the same run, alone and beside other work."""
