"""Dataset transfers: a directory or prefix copied object by object."""
