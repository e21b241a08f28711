"""CLI command modules: each defines `add_commands(tree: vgt.cli.CommandTree)`."""
