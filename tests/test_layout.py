"""The house rules the source tree keeps: modules under 400 lines, and the library never drives its own CLI."""

from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "vgt"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"split these modules along concept lines: {long}"


def test_the_library_and_the_benchmarks_never_import_the_cli():
    callers = [str(p) for p in (*SRC.rglob("*.py"), *BENCHMARKS.glob("*.py"))
               if p.name not in ("cli.py", "__main__.py") and "from vgt.cli import" in p.read_text()]
    assert not callers, f"call the library's stage functions instead of vgt.cli: {callers}"
