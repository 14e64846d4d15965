"""Per-voxel uncertainty from the disagreement of TTA variants and ensemble members.

voxseg reports the **mutual information** between the prediction and the choice of member (the
"BALD" score of Houlsby et al. 2011; the epistemic part of the predictive entropy in Gal 2016 and
in Mehrtash et al. 2020 for medical segmentation ensembles)::

    MI(v) = H(mean_m p_m(v)) - mean_m H(p_m(v))        [nats]

where ``p_m`` are the M predictions (every TTA variant of every member) and ``H`` is the entropy:
``-sum_k p_k ln p_k`` over softmax classes, or for sigmoid regions (BraTS WT/TC/ET) the binary
entropy of each region averaged over the regions. Why this and not the entropy of the mean alone:
MI is exactly 0 wherever all predictions agree (even when they agree on 0.7), and grows only with
disagreement; the entropy of the mean would also flag voxels where every member is equally unsure.
Range: ``[0, ln K]`` for K softmax classes, ``[0, ln 2]`` for regions. One prediction gives 0.

Memory: :class:`PredictionAccumulator` keeps a running sum of probabilities ``(K, Z, Y, X)`` and a
running sum of entropies ``(Z, Y, X)`` (float32), never the individual predictions.

References:
    Houlsby N. et al. (2011) Bayesian active learning for classification and preference learning.
    arXiv:1112.5745.
    Gal Y. (2016) Uncertainty in deep learning. PhD thesis, University of Cambridge, section 3.3.
    Mehrtash A. et al. (2020) Confidence calibration and predictive uncertainty estimation for deep
    medical image segmentation. IEEE Trans. Med. Imaging 39(12):3868-3878.
"""
from __future__ import annotations

import numpy as np

__all__ = ["PredictionAccumulator", "predictive_entropy", "mutual_information"]



def _plogp(p: np.ndarray) -> np.ndarray:
    """``p ln p`` with the limit 0 at p = 0 (so certain voxels have exactly zero entropy)."""
    return p * np.log(np.where(p > 0, p, 1.0))


def predictive_entropy(probs: np.ndarray, activation: str = "softmax") -> np.ndarray:
    """Entropy per voxel in nats.

    Args:
        probs: ``(K, Z, Y, X)`` probabilities (softmax classes summing to 1, or independent sigmoid
            regions).
        activation: ``"softmax"`` (``-sum_k p_k ln p_k``) or ``"sigmoid"`` (binary entropy of each
            channel, averaged over channels).

    Returns:
        ``(Z, Y, X)`` float32, >= 0.
    """
    if activation not in ("softmax", "sigmoid"):
        raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")
    out = np.zeros(probs.shape[1:], np.float32)
    # One channel at a time: one extra volume of memory whatever K is.
    for channel in probs:
        p = np.clip(channel.astype(np.float32, copy=False), 0.0, 1.0)
        out -= _plogp(p)
        if activation == "sigmoid":
            out -= _plogp(1.0 - p)
    if activation == "sigmoid":
        out /= len(probs)
    return np.maximum(out, 0.0)


def mutual_information(member_probs: np.ndarray, activation: str = "softmax") -> np.ndarray:
    """MI between prediction and member: ``H(mean) - mean(H)`` (see the module docstring).

    Args:
        member_probs: ``(M, K, Z, Y, X)`` predictions of M members / TTA variants.
        activation: ``"softmax"`` or ``"sigmoid"``.

    Returns:
        ``(Z, Y, X)`` float32 in nats, 0 where all members agree.
    """
    acc = PredictionAccumulator(activation, track_uncertainty=True)
    for probs in member_probs:
        acc.add(probs)
    return acc.uncertainty()


class PredictionAccumulator:
    """Running mean of predictions (and of their entropies, for the uncertainty map).

    Args:
        activation: ``"softmax"`` or ``"sigmoid"`` (how entropies are computed).
        track_uncertainty: also sum per-prediction entropies (one more ``(Z, Y, X)`` float32 array).
    """

    def __init__(self, activation: str = "softmax", track_uncertainty: bool = False) -> None:
        self.activation = activation
        self.track_uncertainty = track_uncertainty
        self.count = 0
        self._sum: np.ndarray | None = None
        self._entropy_sum: np.ndarray | None = None

    def add(self, probs: np.ndarray) -> None:
        """Add one ``(K, Z, Y, X)`` prediction (float32; views are copied, not kept)."""
        probs = np.asarray(probs, dtype=np.float32)
        if self._sum is None:
            self._sum = np.array(probs, dtype=np.float32, copy=True)
        else:
            if probs.shape != self._sum.shape:
                raise ValueError(f"prediction shape {probs.shape} != earlier {self._sum.shape}")
            self._sum += probs
        if self.track_uncertainty:
            entropy = predictive_entropy(probs, self.activation)
            if self._entropy_sum is None:
                self._entropy_sum = entropy
            else:
                self._entropy_sum += entropy
        self.count += 1

    def mean(self) -> np.ndarray:
        """``(K, Z, Y, X)`` float32 mean probabilities."""
        if self._sum is None:
            raise ValueError("no prediction was added")
        return self._sum / np.float32(self.count)

    def mean_entropy(self) -> np.ndarray:
        """``(Z, Y, X)`` float32 mean of the per-prediction entropies (nats)."""
        if self._entropy_sum is None:
            raise ValueError("uncertainty was not tracked (track_uncertainty=False) or nothing was added")
        return self._entropy_sum / np.float32(self.count)

    def uncertainty(self) -> np.ndarray:
        """``(Z, Y, X)`` float32 mutual information in nats (0 for a single prediction)."""
        return mi_from_moments(self.mean(), self.mean_entropy(), self.activation)


def mi_from_moments(mean_probs: np.ndarray, mean_entropy: np.ndarray, activation: str) -> np.ndarray:
    """``H(mean_probs) - mean_entropy``, clipped at 0 (float rounding), float32 ``(Z, Y, X)``."""
    out = predictive_entropy(mean_probs, activation)
    out -= mean_entropy
    return np.maximum(out, 0.0, out=out)
