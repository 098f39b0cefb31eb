"""K-means weight sharing (Deep Compression, Han et al. 2016).

Each layer's weights are clustered into ``2^bits`` centroids with
scikit-learn's ``KMeans`` using linear initialisation over ``[min, max]``,
which the paper found keeps the rare large weights that matter most.
The layer is then stored as a codebook (float32) plus ``bits``-wide indices.

>>> import torch
>>> w = torch.tensor([0.0, 0.1, 0.11, 0.9, 1.0, 1.02])
>>> codebook, codes = kmeans_quantize(w, bits=1)
>>> sorted(round(c, 2) for c in codebook.tolist()), codes.tolist()
([0.07, 0.97], [0, 0, 0, 1, 1, 1])
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["kmeans_quantize"]


def kmeans_quantize(w: torch.Tensor, *, bits: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ``w`` into at most ``2^bits`` shared values.

    Returns:
        codebook: float32 (k,), sorted ascending, k <= 2^bits.
        codes: uint8 array of ``w``'s shape, indices into ``codebook``.
    """
    from sklearn.cluster import KMeans  # import here: scikit-learn is slow to import

    values = w.detach().to(torch.float32).reshape(-1).numpy().astype(np.float64)
    unique = np.unique(values)
    k = min(1 << bits, unique.size)
    if k == unique.size:
        # Already at most 2^bits distinct values: the exact values are the codebook.
        codebook = unique
    else:
        init = np.linspace(values.min(), values.max(), k).reshape(-1, 1)
        km = KMeans(n_clusters=k, init=init, n_init=1, random_state=seed, max_iter=100)
        km.fit(values.reshape(-1, 1))
        codebook = np.sort(km.cluster_centers_.reshape(-1))
    # Assign by nearest centroid on the sorted codebook (midpoints between neighbours).
    mids = (codebook[1:] + codebook[:-1]) / 2
    codes = np.searchsorted(mids, values).astype(np.uint8)
    return codebook.astype(np.float32), codes.reshape(tuple(w.shape))
