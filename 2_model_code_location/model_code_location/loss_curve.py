"""The loss curve as a PNG inside markdown: Dagster's UI renders it in the asset's metadata."""

import base64
import io
from typing import Any


def loss_curve_markdown(history: dict[str, Any], title: str) -> str:
    """Markdown with an embedded PNG of train and validation loss against the step, and where early stopping
    stopped training."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.2), dpi=100)
    axis.plot(history["step"], history["train_loss"], label="train (running mean)")
    axis.plot(history["eval_step"], history["validation_loss"], marker="o", label="validation")
    stopped = history.get("stopped") or {}
    if str(stopped.get("reason", "")).startswith("early stopping"):
        axis.axvline(stopped["step"], color="grey", linestyle="--", label=f"stopped early (step {stopped['step']})")
    axis.set(xlabel="iteration", ylabel="cross-entropy (nats/char)", title=title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return f"![{title}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')})"
