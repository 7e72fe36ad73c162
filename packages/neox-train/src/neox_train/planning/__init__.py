"""`neox plan`: memory and compute per GPU from the config alone."""
