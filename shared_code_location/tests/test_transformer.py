import pytest
import torch

from shared_code_location.model.transformer import (
    DecoderTransformer,
    TransformerConfig,
    from_tensor_bundle,
    to_tensor_bundle,
)

CONFIG = TransformerConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=32)


def test_logits_shape():
    model = DecoderTransformer(CONFIG).eval()
    assert model(torch.randint(11, (3, 16))).shape == (3, 16, 11)
    assert model(torch.randint(11, (1, 5))).shape == (1, 5, 11)


def test_causality_future_tokens_never_change_earlier_logits():
    torch.manual_seed(0)
    model = DecoderTransformer(CONFIG).eval()
    ids = torch.randint(11, (2, 16))
    changed = ids.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 11
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_key_value_cache_gives_the_same_logits_as_the_full_forward():
    torch.manual_seed(2)
    model = DecoderTransformer(CONFIG).eval()
    ids = torch.randint(11, (2, CONFIG.block_size))
    with torch.no_grad():
        full = model(ids)
        # Prefill 5 positions at once, then decode the rest one token at a time.
        logits, cache = model.forward_cached(ids[:, :5], model.empty_cache(batch=2))
        assert torch.allclose(logits, full[:, :5], atol=1e-5)
        for position in range(5, CONFIG.block_size):
            logits, cache = model.forward_cached(ids[:, position : position + 1], cache)
            assert torch.allclose(logits[:, 0], full[:, position], atol=1e-5), position
    assert cache.shape == (CONFIG.n_layer, 2, 2, CONFIG.n_head, CONFIG.block_size, CONFIG.n_embd // CONFIG.n_head)


def test_weights_round_trip_through_a_tensor_bundle():
    torch.manual_seed(1)
    model = DecoderTransformer(CONFIG).eval()
    bundle = to_tensor_bundle(model, note="x")
    assert "lm_head.weight" not in bundle.tensors  # tied to wte.weight, stored once
    clone = from_tensor_bundle(bundle)
    ids = torch.randint(11, (2, 8))
    with torch.no_grad():
        assert torch.equal(model(ids), clone(ids))
    assert clone.lm_head.weight.data_ptr() == clone.wte.weight.data_ptr()


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="multiple of n_head"):
        TransformerConfig(vocab_size=5, n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="dropout"):
        TransformerConfig(vocab_size=5, dropout=1.5)


def test_window_metrics_is_the_mean_loss_and_accuracy_over_consecutive_windows():
    from torch.nn import functional as F

    from shared_code_location.model.transformer import window_metrics

    torch.manual_seed(0)
    model = DecoderTransformer(TransformerConfig(vocab_size=7, block_size=4, n_layer=1, n_head=1, n_embd=8))
    model.train()
    tokens = torch.randint(0, 7, (23,))
    metrics = window_metrics(model, tokens, batch_size=2)  # 22 targets → 5 windows of 4, the rest dropped
    assert metrics["tokens"] == 20 and model.training  # the caller's mode is restored
    model.eval()
    with torch.no_grad():
        logits = model(tokens[:20].view(5, 4))
    targets = tokens[1:21].view(5, 4)
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item(), rel=1e-5)
    assert metrics["accuracy"] == pytest.approx((logits.argmax(-1) == targets).float().mean().item())
    assert window_metrics(model, tokens, max_tokens=8)["tokens"] == 8
    with pytest.raises(ValueError, match="cannot fill one window"):
        window_metrics(model, tokens[:4])


def test_auto_picks_cuda_then_mps_then_the_cpu_and_a_missing_device_is_named():
    from shared_code_location.model.transformer import choose_device, pick_device

    assert choose_device("auto", cuda=True, mps=True) == "cuda"
    assert choose_device("auto", cuda=False, mps=True) == "mps"  # a Mac
    assert choose_device("auto", cuda=False, mps=False) == "cpu"
    assert choose_device("cpu", cuda=True, mps=True) == "cpu"
    assert choose_device("mps", cuda=False, mps=True) == "mps"
    for requested in ("cuda", "mps"):
        with pytest.raises(RuntimeError, match=f"device '{requested}' was requested but torch sees no"):
            choose_device(requested, cuda=False, mps=False)
    with pytest.raises(ValueError, match="'tpu' is not one of auto, cpu, cuda, mps"):
        choose_device("tpu", cuda=True, mps=True)
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert pick_device("auto").type == expected  # this machine, as torch sees it


def test_weights_of_a_compiled_or_wrapped_model_keep_the_plain_names():
    # torch.compile wraps lazily (nothing compiles until a call): the names are what a bundle and a checkpoint see.
    from shared_code_location.model.transformer import plain_state_dict

    model = DecoderTransformer(CONFIG)
    plain = list(model.state_dict())
    compiled = torch.compile(model)
    assert all(name.startswith("_orig_mod.") for name in compiled.state_dict())
    assert list(plain_state_dict(compiled.state_dict())) == plain
    model.blocks[0] = torch.compile(model.blocks[0])  # one block wrapped: `blocks.0._orig_mod.…`
    assert any("_orig_mod." in name for name in model.state_dict())
    assert list(plain_state_dict(model.state_dict())) == plain
    bundle = to_tensor_bundle(compiled)
    assert "_orig_mod" not in "".join(bundle.tensors) and set(bundle.tensors) == set(plain) - {"lm_head.weight"}
    restored = from_tensor_bundle(bundle)  # strict: every name known
    assert torch.equal(restored.wte.weight, model.wte.weight)
