"""Command-line pieces shared by ``meprop``, ``parse`` and ``tag``: option factories (each
command gives its own default and help; type, choices and name stay the same everywhere), the
clean error exit, and the guard against writing over the input file.
"""

from pathlib import Path

import click


def _compose(*decorators):
    """Several click options as one decorator, in the order given (as --help lists them)."""
    def apply(function):
        for decorator in reversed(decorators):
            function = decorator(function)
        return function
    return apply


def treebank_options(done_each_epoch):
    """``--train`` and ``--dev`` treebanks (default: UD English EWT); ``done_each_epoch`` says
    what happens to dev after each epoch, e.g. "parsed"."""
    return _compose(
        click.option("--train", "train_file", type=click.Path(dir_okay=False), default=None,
                     help="Training treebank (CoNLL-U/CoNLL-X) [default: UD English EWT train]."),
        click.option("--dev", "dev_file", type=click.Path(dir_okay=False), default=None,
                     help=f"Dev treebank, {done_each_epoch} after each epoch to keep the best "
                     "model [default: UD English EWT dev]."))


def training_run_options(default_out):
    """``--data-dir``, ``--resume``, ``--out`` and ``--quiet`` of a training command."""
    return _compose(
        click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                     help="Where to find UD English EWT (else $MEPROP_DATA, else the cache, "
                     "downloading there)."),
        click.option("--resume", is_flag=True,
                     help="Continue an interrupted run from OUT.resume (same options)."),
        click.option("--out", type=click.Path(dir_okay=False), default=default_out,
                     show_default=True,
                     help="Where to write the best model (and OUT.resume, the training state)."),
        click.option("--quiet", is_flag=True, help="No progress bars."))


def fail(error):
    """Exit with click's one-line ``Error: ...`` (no traceback)."""
    raise click.ClickException(str(error)) from None


def refuse_overwrite(input_file, output):
    """``predict -o OUT`` must never write over its own input."""
    if not output or input_file == "-":
        return
    try:
        same = Path(input_file).resolve() == Path(output).resolve()
    except OSError:
        same = False
    if same:
        fail(f"refusing to overwrite the input file {input_file}; give another -o")

MODES = ("per_example", "unified")


def mode_option(help):
    return click.option("--mode", type=click.Choice(MODES), default="per_example",
                        show_default=True, help=help)


def selection_option():
    return click.option("--selection", type=click.Choice(["topk", "random"]), default="topk",
                        show_default=True, help="Keep the largest-magnitude gradient entries, "
                        "or random ones (ablation).")


def dropout_option(default):
    return click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=default,
                        show_default=True, help="Dropout after each hidden layer.")


def persistent_grad_option():
    return click.option(
        "--persistent-grad", is_flag=True,
        help="Keep one weight-gradient buffer per meProp layer and rewrite only the rows each "
        "backward touches, instead of a fresh, mostly zero gradient per step (the compiled CPU "
        "layers, and unified meProp on any device; the same gradients, a faster backward at "
        "small batches).")


def sparse_update_option():
    return click.option(
        "--sparse-update", is_flag=True,
        help="Let the optimizer update only the weight rows meProp's backward touched (the rest "
        "keep their weights and optimizer state): exact for AdaGrad, lazy Adam for Adam (as "
        "torch.optim.SparseAdam). Implies --persistent-grad.")


def seed_option(help):
    return click.option("--seed", type=int, default=1, show_default=True, help=help)


def device_option():
    return click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                        show_default=True,
                        help="Where to train; auto picks cuda when available.")


def metrics_json_option():
    return click.option("--metrics-json", type=click.Path(dir_okay=False), default=None,
                        help="Write the final metrics to this file as a flat JSON object.")


def load_model_or_fail(load_model, model_path, default_path, kind, command):
    """``load_model(path)`` for ``--model`` or the shipped default, with one-line errors."""
    path = Path(model_path) if model_path else default_path
    if not path.exists():
        fail(f"no {kind} model at {path}" + ("" if model_path else
             f" (the default model is not installed; train one with '{command}')"))
    try:
        return load_model(path)
    except (ValueError, OSError, RuntimeError) as error:
        fail(f"cannot load {kind} model {path}: {error}")
