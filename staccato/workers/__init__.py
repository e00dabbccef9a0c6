"""Building and running workers, and the embedded Temporal dev server."""
