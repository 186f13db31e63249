"""The contract every code location imports: asset keys, storage formats, IO manager, tokenizer, resources.

Nothing here imports torch at module level, so importing the contract keeps code-location loads fast.
"""
