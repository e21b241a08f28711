import subprocess
import sys

from vgt.cli import main, run


def test_help_lists_command_groups(capsys):
    try:
        main(["--help"])
    except SystemExit as exit:
        assert exit.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "eval" in out


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "vgt", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("vgt ")


def test_bad_input_is_one_line_error_not_a_traceback(tmp_path, capsys):
    code = run(["generate", "a red circle", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("vgt: error:") and "Traceback" not in err
