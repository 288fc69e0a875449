"""ssmc.backends: lowerings of the optimized IR (NumPy interpreter, Triton code generation)."""
