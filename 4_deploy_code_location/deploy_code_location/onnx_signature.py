"""The ONNX model's inputs and outputs: one definition for the exporter (torch) and the generator (no torch).

One graph serves both phases of decoding. With an empty cache it is the plain forward pass over a prompt (prefill);
fed its own `present_key_values` back, it runs one new token against the cached keys and values (decode), so the
cost per token stays flat as the context grows instead of recomputing the whole context every step.
"""

#: Opset 23 has a native `Attention` operator that ONNX Runtime runs as one fused kernel.
OPSET = 23

INPUT_IDS = "input_ids"
PAST_KEY_VALUES = "past_key_values"
LOGITS = "logits"
PRESENT_KEY_VALUES = "present_key_values"

SIGNATURE = {
    "inputs": {
        INPUT_IDS: "int64 [batch, sequence]",
        PAST_KEY_VALUES: "float32 [n_layer, 2 (key, value), batch, n_head, past, head_dim]; past may be 0",
    },
    "outputs": {
        LOGITS: "float32 [batch, sequence, vocab_size]",
        PRESENT_KEY_VALUES: "float32 [n_layer, 2, batch, n_head, past + sequence, head_dim]",
    },
    "constraint": "past + sequence <= block_size (positions are learned)",
}
