"""Command-line options shared by every training command (``meprop mnist``, ``parse``, ``tag``).

Each is a factory so a command can give its own default and help; the type, choices and name
stay the same everywhere.
"""

import click

MODES = ("per_example", "unified")


def mode_option(help):
    return click.option("--mode", type=click.Choice(MODES), default="per_example",
                        show_default=True, help=help)


def dropout_option(default):
    return click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=default,
                        show_default=True, help="Dropout after each hidden layer.")


def seed_option(help):
    return click.option("--seed", type=int, default=1, show_default=True, help=help)


def device_option():
    return click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                        show_default=True,
                        help="Where to train; auto picks cuda when available.")


def metrics_json_option():
    return click.option("--metrics-json", type=click.Path(dir_okay=False), default=None,
                        help="Write the final metrics to this file as a flat JSON object.")
