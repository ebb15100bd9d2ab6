"""The DES smoke path runs and its validation agrees with theory, so the benchmark cannot rot."""
from __future__ import annotations

import pytest

from benchmarks.des.run import main, validate
from benchmarks.des.theory import erlang_b, mm1_sojourn, supermarket_sojourn

pytestmark = pytest.mark.unit


def test_theory_values() -> None:
    assert mm1_sojourn(0.9) == pytest.approx(10.0)
    assert supermarket_sojourn(0.9) == pytest.approx(2.6141, abs=1e-3)  # Mitzenmacher 2001
    assert supermarket_sojourn(0.5) == pytest.approx(sum(0.5 ** (2**i - 2) for i in range(1, 30)))
    assert erlang_b(1, 1.0) == pytest.approx(0.5)
    assert erlang_b(20, 15.0) == pytest.approx(0.0456, abs=1e-4)


def test_smoke_validation_within_tolerance() -> None:
    checks = validate(smoke=True)
    assert len(checks) == 4
    for c in checks:
        assert c.ok, f"{c.name}: theory {c.theory:.4f} simulated {c.sim:.4f} ({c.rel:+.1%})"


def test_smoke_cli_writes_report(tmp_path, capsys) -> None:
    rc = main(["--smoke", "--skip-validation", "--requests", "5000", "--out", str(tmp_path)])
    assert rc == 0
    report = (tmp_path / "report.md").read_text()
    assert "| queue | headroom |" in report and "### Targets" in report
    assert list(tmp_path.glob("latency-cdf-*.png"))
    capsys.readouterr()
