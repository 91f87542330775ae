"""The evaluate stage's library: every variant compared on validation and test, costs, the summary."""
