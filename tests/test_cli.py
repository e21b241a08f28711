"""The `vgt` command line: the help lists the commands in the order a user needs them, fast."""

import argparse
import subprocess
import sys

from vgt.cli import main, run


def test_help_lists_the_commands_in_the_order_a_user_needs_them(capsys):
    try:
        main(["--help"])
    except SystemExit as exit:
        assert exit.code == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.split("commands:")[1].splitlines()[2:] if line.startswith("    ")
              and not line.startswith("     ")]
    assert listed[:10] == ["generate", "sample-benchmark", "sampling-defaults", "inpaint", "outpaint", "variations",
                           "demo", "train", "eval", "recipe"]
    assert {"shapes", "caption", "reconstruct", "cache-latents", "convert"} <= set(listed)


def test_each_command_module_is_named_after_its_command():
    import pkgutil

    import vgt.commands
    from vgt.cli import COMMANDS

    assert sorted(COMMANDS) == sorted(m.name for m in pkgutil.iter_modules(vgt.commands.__path__))


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "vgt", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("vgt ")


def test_bad_input_is_one_line_error_not_a_traceback(tmp_path, capsys):
    code = run(["generate", "a red circle", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("vgt: error:") and "Traceback" not in err



def _choices(parser: argparse.ArgumentParser, command: list[str], dest: str) -> set[str]:
    for word in command:  # walk down the subcommands
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return set(next(a for a in parser._actions if a.dest == dest).choices)


def test_preset_choices_of_the_cli_are_the_registries():
    # the parser lists preset names without importing torch; they must not drift from vgt.presets
    from vgt.cli import build_parser
    from vgt.presets import DCAE_PRESETS, SMALL_VLM_PRESETS

    assert _choices(build_parser(), ["train", "vlm"], "vlm_preset") == set(SMALL_VLM_PRESETS)
    assert _choices(build_parser(), ["train", "ae"], "dcae_preset") == set(DCAE_PRESETS)
