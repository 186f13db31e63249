"""The model: the decoder-only transformer (PyTorch) and the character tokenizer (NumPy)."""
