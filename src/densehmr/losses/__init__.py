"""Loss functions, one small module per family; each method weights them from its config."""
