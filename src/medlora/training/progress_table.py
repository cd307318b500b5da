"""mlx-lm's training table (iteration, loss, tokens/s, validation) as medlora shows it.

mlx-lm (0.31+) draws the table with ``rich`` and always in colour: piped to a file (``medlora
sweep > sweep.log``) seven lines in ten carried escape codes. Here the table is plain text when
standard output is not a terminal, and, with ``train.validate_base=false``, leaves out the first
evaluation, which mlx-lm runs on one example and medlora does not use (``batches.batch_iterator``).
Older mlx-lm releases print plain lines and have no table to adjust.
"""

from __future__ import annotations

import shutil
import sys
from contextlib import contextmanager


@contextmanager
def training_table(skip_first_eval: bool):
    """While mlx-lm trains: its table without colour in a pipe, and without the unused first evaluation."""
    import mlx_lm.tuner.trainer as trainer

    shown_ui = getattr(trainer, "TrainUI", None)
    if shown_ui is None:
        yield
        return
    ui = _first_val_unshown(shown_ui) if skip_first_eval else shown_ui
    trainer.TrainUI = ui
    try:
        with _plain_when_piped():
            yield
    finally:
        trainer.TrainUI = shown_ui


def _first_val_unshown(shown_ui: type) -> type:
    class FirstValUnshown(shown_ui):
        val_reports = 0

        def report_val(self, it, val_loss, val_time):
            self.val_reports += 1
            if self.val_reports > 1:  # the first is a one-example loss, then read as validation loss rising
                super().report_val(it, val_loss, val_time)

    return FirstValUnshown


@contextmanager
def _plain_when_piped():
    """The table's console (``mlx_lm.cli_ui.make_console``, truecolor forced) without colour off a terminal."""
    from mlx_lm import cli_ui

    coloured = cli_ui.make_console
    if sys.stdout.isatty():
        yield
        return

    def plain_console():
        from rich.console import Console  # mlx-lm's own dependency

        # its theme's style names ("ui.muted") are then ignored, as every style is
        return Console(highlight=False, color_system=None, width=shutil.get_terminal_size((120, 0)).columns)

    cli_ui.make_console = plain_console
    try:
        yield
    finally:
        cli_ui.make_console = coloured
