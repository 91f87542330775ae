"""The cpu stage's library: the CPU's kernel class, which evaluate's outputs depend on."""
