"""The figures of the evaluation reports (matplotlib, Agg): ROC curves, confusion matrices,
Fig. 3 mean attention per frame, Fig. 4 t-SNE of raw MFCC against CGANet's embedding, and
reliability diagrams."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from model import aggregate, baselines, calibration
from model import constants as C
from model.results import METHOD_LABELS, FoldOutput

TSNE_PCA_DIM = 50
"""Raw MFCC (6,880 values per segment) is reduced with PCA to this many before t-SNE."""


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(
    results: dict[str, list[FoldOutput]], labels: np.ndarray, title: str, path: Path
) -> None:
    """ROC curves of every method, out-of-fold predictions pooled over folds."""
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for method, folds in results.items():
        idx = np.concatenate([f.test for f in folds])
        p = np.concatenate([f.p_positive for f in folds])
        positive = labels[idx] == 0
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, p)
        auc = baselines.mean_std([f.metrics["auc"] for f in folds])
        ax.plot(
            fpr,
            tpr,
            label=f"{METHOD_LABELS[method]}: AUC {100 * auc['mean']:.1f} ± {100 * auc['std']:.1f} %",
        )
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusions(
    results: dict[str, list[FoldOutput]],
    labels: np.ndarray,
    class_names: tuple[str, str],
    title: str,
    path: Path,
) -> None:
    """Confusion matrices (counts pooled over folds) per method."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.2), squeeze=False)
    for ax, (method, folds) in zip(axes[0], results.items(), strict=True):
        idx = np.concatenate([f.test for f in folds])
        # CGANet's P_s > P_f, and the baselines' most probable class
        pred = aggregate.decide(np.concatenate([f.p_positive for f in folds]))
        cm = baselines.confusion(labels[idx], pred)
        ax.imshow(cm, cmap="Blues")
        for i in range(2):
            for j in range(2):
                dark = cm[i, j] > cm.max() / 2
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    color="white" if dark else "black",
                )
        ax.set_xticks([0, 1], [f"pred {n}" for n in class_names], fontsize=7)
        ax.set_yticks([0, 1], [f"true {n}" for n in class_names], fontsize=7)
        ax.set_title(METHOD_LABELS[method], fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_attention(
    folds: list[FoldOutput], labels: np.ndarray, class_names: tuple[str, str], path: Path
) -> None:
    """Fig. 3: mean attention weight per frame, by true class (test segments, all folds)."""
    plt = _pyplot()
    idx = np.concatenate([f.test for f in folds])
    att = np.concatenate([f.attention for f in folds if f.attention is not None])
    frames_s = (np.arange(C.N_FRAMES) * C.HOP_LENGTH) / C.SAMPLE_RATE
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for cls, name in enumerate(class_names):
        sel = att[labels[idx] == cls]
        if len(sel) == 0:
            continue
        mean, sem = sel.mean(axis=0), sel.std(axis=0) / math.sqrt(len(sel))
        ax.plot(frames_s, mean, label=f"{name} (n={len(sel)})")
        ax.fill_between(frames_s, mean - sem, mean + sem, alpha=0.25)
    ax.axhline(1 / C.N_FRAMES, color="grey", linestyle=":", linewidth=1, label="uniform (1/86)")
    ax.set(
        xlabel="time in segment (s)",
        ylabel="mean attention weight",
        title="Mean attention per frame (CGANet, test segments)",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_tsne(
    raw: np.ndarray,
    embedding: np.ndarray,
    labels: np.ndarray,
    class_names: tuple[str, str],
    seed: int,
    path: Path,
) -> None:
    """Fig. 4: 2-D t-SNE of raw MFCC (PCA first) and of CGANet's learned embedding."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    plt = _pyplot()
    n = len(labels)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    flat = StandardScaler().fit_transform(raw.reshape(n, -1))
    flat = PCA(n_components=min(TSNE_PCA_DIM, n, flat.shape[1]), random_state=seed).fit_transform(
        flat
    )
    panels = {
        "raw MFCC (PCA 50, then t-SNE)": flat,
        "CGANet embedding (F_attn summed over frames)": StandardScaler().fit_transform(embedding),
    }
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, (title, x) in zip(axes, panels.items(), strict=True):
        xy = TSNE(
            n_components=2, perplexity=perplexity, random_state=seed, init="pca"
        ).fit_transform(x)
        for cls, name in enumerate(class_names):
            sel = labels == cls
            ax.scatter(xy[sel, 0], xy[sel, 1], s=8, alpha=0.7, label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, path: Path
) -> None:
    """Reliability diagram: observed share of class 0 against the mean predicted p(class 0) per
    bin, one line per {label: (p_positive, positive)}, with each line's ECE in the legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.6))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
    for label, (p, positive) in curves.items():
        rel = calibration.reliability(p, positive)
        ax.plot(rel.mean_p, rel.observed, marker="o", label=f"{label}: ECE {rel.ece:.3f}")
    ax.set(
        xlabel="mean predicted p(class 0) in bin",
        ylabel="observed share of class 0",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
