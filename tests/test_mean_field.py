"""The mean-field fixed points (q*, c*, chi_1, chi_c, xi_c) against an independent computation by adaptive
quadrature, and xi_c's divergence at the order/chaos boundary (Schoenholz et al. 2017)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.optimize import brentq

from initstudy.nn.propagation import mean_field, pair_expectation
from initstudy.report.papers.schoenholz2017 import critical_sigma_w2

SIGMA_B2 = 0.05  # conf/experiment/schoenholz2017.yaml: init.bias_std = sqrt(0.05), tanh


def _gauss(f) -> float:
    """E[f(z)], z ~ N(0, 1), by adaptive quadrature (independent of the package's fixed grids)."""
    return quad(
        lambda z: f(z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi), -np.inf, np.inf, epsabs=1e-14
    )[0]


def _ordered_xi_c(sigma_w2: float, sigma_b2: float) -> float:
    """In the ordered phase c* = 1, so chi_c = chi_1 = sigma_w^2 E[sech^4(sqrt(q*) z)] and xi_c = -1/ln chi_1."""
    q = brentq(lambda q: sigma_w2 * _gauss(lambda z: math.tanh(math.sqrt(q) * z) ** 2) + sigma_b2 - q,
               1e-6, 10.0, xtol=1e-15, rtol=1e-14)  # fmt: skip
    chi_1 = sigma_w2 * _gauss(lambda z: (1 - math.tanh(math.sqrt(q) * z) ** 2) ** 2)
    return -1.0 / math.log(chi_1)


@pytest.mark.parametrize(
    ("sigma_w2", "expected"), [(1.0, 3.627), (1.5, 15.79), (1.75, 426.2), (1.76, 4912.0)]
)
def test_xi_c_in_the_ordered_phase_is_minus_one_over_log_chi_1(sigma_w2, expected):
    field = mean_field("tanh", sigma_w2, SIGMA_B2)
    assert field.c_star == 1.0 and field.chi_c == field.chi_1 < 1
    assert field.xi_c == pytest.approx(_ordered_xi_c(sigma_w2, SIGMA_B2), rel=1e-3)
    assert field.xi_c == pytest.approx(expected, rel=2e-3)


def test_the_experiments_bound_at_sigma_w2_1_75_is_about_2557_layers():
    # A correlation map iterated 500 times from c = 0.5 stops at c ~ 0.9935 here and gives xi_c ~ 227: the map
    # relaxes over ~xi_c layers, so no fixed count reaches c* = 1 near the boundary.
    field = mean_field("tanh", 1.75, SIGMA_B2)
    assert 6 * field.xi_c == pytest.approx(2557, abs=2)


def test_the_chaotic_fixed_point_solves_the_correlation_map():
    field = mean_field("tanh", 2.5, SIGMA_B2)
    one = np.ones(1)
    q = field.q_star * one
    mapped = (2.5 * pair_expectation("tanh", q, q, field.c_star * one)[0] + SIGMA_B2) / field.q_star
    assert field.chi_1 > 1 and 0 < field.c_star < 1
    assert mapped == pytest.approx(field.c_star, abs=1e-12)
    slope = 2.5 * pair_expectation("tanh", q, q, field.c_star * one, derivative=True)[0]
    assert field.chi_c == pytest.approx(slope, rel=1e-12) and field.chi_c < 1
    assert field.xi_c == pytest.approx(-1 / math.log(slope), rel=1e-12)


def test_xi_c_diverges_at_the_order_chaos_boundary_from_both_sides():
    critical = critical_sigma_w2("tanh", SIGMA_B2)
    assert critical == pytest.approx(1.761, abs=1e-3)
    for side in (-1, 1):
        depths = [mean_field("tanh", critical + side * d, SIGMA_B2).xi_c for d in (1e-2, 1e-3, 1e-4)]
        assert depths[0] < depths[1] < depths[2]
        # xi_c ~ 1 / |sigma_w^2 - critical|: each tenfold step towards the boundary gives about ten times more
        assert depths[2] / depths[1] == pytest.approx(10, rel=0.05)
        assert depths[2] > 40_000


def test_tanh_without_bias_has_its_boundary_at_sigma_w2_one():
    # tanh'(0) = 1 and q* = 0 below sigma_w^2 = 1: chi_1 = sigma_w^2 there
    assert critical_sigma_w2("tanh", 0.0) == pytest.approx(1.0, abs=1e-4)
    assert mean_field("tanh", 0.8, 0.0).chi_1 == pytest.approx(0.8, rel=1e-12)
