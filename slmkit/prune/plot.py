"""The layer-importance PNG written into every prune artifact."""

from __future__ import annotations

from pathlib import Path


def plot_layer_importance(scores: list[float], removed: list[int], path: Path, title: str) -> Path:
    """Bar chart of per-layer block influence; removed layers drawn in red."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.3 * len(scores) + 2), 3.2))
    colors = ["tab:red" if i in removed else "tab:blue" for i in range(len(scores))]
    ax.bar(range(len(scores)), scores, color=colors)
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("block influence (1 - cos)")
    ax.set_title(title + ("  (red: removed)" if removed else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
