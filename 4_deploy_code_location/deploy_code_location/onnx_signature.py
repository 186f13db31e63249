"""The ONNX model's inputs and outputs: one definition for the exporter (torch) and the generator (no torch).

One graph serves every phase of decoding. With an empty cache it is the plain forward pass over a prompt (prefill);
fed its own `present_key_values` back, it runs one new token per row against the cached keys and values (decode), so
the cost per token stays flat as the context grows. Each row carries its own positions and a mask of which cached
slots are real, so sequences of different lengths decode together in one call (continuous batching).
"""

#: Opset 23 has a native `Attention` operator that ONNX Runtime runs as one fused kernel.
OPSET = 23

INPUT_IDS = "input_ids"
POSITION_IDS = "position_ids"
PAST_KEY_VALUES = "past_key_values"
PAST_MASK = "past_mask"
LOGITS = "logits"
PRESENT_KEY_VALUES = "present_key_values"
INPUT_NAMES = (INPUT_IDS, POSITION_IDS, PAST_KEY_VALUES, PAST_MASK)

SIGNATURE = {
    "inputs": {
        INPUT_IDS: "int64 [batch, sequence]",
        POSITION_IDS: "int64 [batch, sequence]: each token's position, < block_size (positions are learned)",
        PAST_KEY_VALUES: "float32 [n_layer, 2 (key, value), batch, n_head, past, head_dim]; past may be 0",
        PAST_MASK: "bool [batch, past]: true where a cached slot holds a real token of that row",
    },
    "outputs": {
        LOGITS: "float32 [batch, sequence, vocab_size]",
        PRESENT_KEY_VALUES: "float32 [n_layer, 2, batch, n_head, past + sequence, head_dim]",
    },
    "constraint": "per row, real cached slots + sequence <= block_size; past <= 2 * block_size",
}
