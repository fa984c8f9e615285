"""The `voicefleet` command line: one typer app, one module per command group, each a thin layer
over a Python API that tests call directly.

    voicefleet --help
"""

from __future__ import annotations

import logging
import sys

import typer

from voicefleet import __version__
from voicefleet.cli import data, eval as eval_cmds, export, models, run, serve, synthesize, text, train, tune

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="GPT-SoVITS v2 voice cloning at cluster scale on Ray.")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug details."),
          version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        typer.echo(f"voicefleet {__version__}")
        raise typer.Exit()
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


app.command("init-pretrained")(models.init_pretrained_cmd)
app.command("inspect")(models.inspect_cmd)
app.command("synthesize")(synthesize.synthesize_cmd)
app.command("phonemes")(text.phonemes_cmd)
app.command("slice")(data.slice_cmd)
app.command("prepare")(data.prepare_cmd)
app.add_typer(train.train_app, name="train")
app.command("tune")(tune.tune_cmd)
app.command("serve")(serve.serve_cmd)
app.add_typer(export.export_app, name="export")
app.command("run")(run.run_cmd)
app.command("eval")(eval_cmds.eval_cmd)


def main() -> None:
    app()
