"""The prepare stage's library: dataset readers, resizing and splitting, the data report."""
