"""The transform tests' model: three k-means centroids in four dimensions."""

from __future__ import annotations

import numpy as np

FEATURES = 4
CENTROIDS = np.array([[0, 0, 0, 0], [5, 5, 5, 5], [-5, 0, 5, 0]], dtype=np.float32)
