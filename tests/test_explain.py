"""The worked BN example: mean [10, 11], biased variance [33, 33], computed by the library."""

import numpy as np
import pytest

from bnbench.norm.worked_example import worked_example

pytestmark = pytest.mark.unit


def test_worked_example_numbers():
    ex = worked_example(gamma=2.0, beta=0.5)
    np.testing.assert_allclose(ex.mean, [10.0, 11.0])
    np.testing.assert_allclose(ex.var, [33.0, 33.0])
    x_hat = (ex.x - ex.mean) / np.sqrt(33.0 + 1e-5)
    np.testing.assert_allclose(ex.x_hat, x_hat, rtol=1e-6)
    np.testing.assert_allclose(ex.y, 2.0 * x_hat + 0.5, rtol=1e-6)


def test_explain_command_prints_mean_and_variance(cli):
    result = cli("explain", "--gamma", "2", "--beta", "0.5")
    assert result.exit_code == 0
    mean_line = next(line for line in result.stdout.splitlines() if "mean = Σx / 10" in line)
    var_line = next(line for line in result.stdout.splitlines() if "var = Σ(x − mean)² / 10" in line)
    assert [c.strip() for c in mean_line.split("│")[2:4]] == ["10", "11"]
    assert [c.strip() for c in var_line.split("│")[2:4]] == ["33", "33"]
    first_row = next(line for line in result.stdout.splitlines() if line.startswith("│  1 │  2 │"))
    # x̂ = (1 - 10) / sqrt(33 + 1e-5) = -1.5667 and y = 2 * x̂ + 0.5 = -2.6334.
    assert [c.strip() for c in first_row.split("│")[3:7]] == ["-1.5667", "-1.5667", "-2.6334", "-2.6334"]
