"""Tumour envelope: the ellipsoid through the contour against fat. Fast."""

from __future__ import annotations

import numpy as np

from segmentation.tumour import _fit_ellipsoid


def test_fit_ellipsoid_recovers_an_ellipsoid_from_the_half_facing_fat() -> None:
    rng = np.random.default_rng(3)
    semi_mm = np.array([14.0, 12.0, 10.0])
    centre_mm = np.array([2.0, -3.0, 1.5])
    directions = rng.normal(size=(2000, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    cap = directions[directions[:, 0] > -0.2]  # the other side lies against parenchyma
    points = centre_mm + cap * semi_mm + rng.normal(scale=0.3, size=cap.shape)
    fit = _fit_ellipsoid(points)
    assert fit is not None
    centre, form = fit
    assert np.allclose(centre, centre_mm, atol=0.8)
    assert np.allclose(np.sort(1.0 / np.sqrt(np.linalg.eigvalsh(form))), np.sort(semi_mm),
                       atol=1.0)


def test_fit_ellipsoid_rejects_a_hyperboloid() -> None:
    t, z = np.meshgrid(np.linspace(0, 2 * np.pi, 40), np.linspace(-8, 8, 20))
    radius = np.sqrt(100.0 + z**2)  # x² + y² − z² = 100
    points = np.stack([(radius * np.cos(t)).ravel(), (radius * np.sin(t)).ravel(), z.ravel()],
                      axis=1)
    assert _fit_ellipsoid(points) is None
