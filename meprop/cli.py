"""The ``meprop`` command: library-level tasks (the MNIST sanity task)."""

import json

import click

from meprop.cli_options import (
    device_option,
    dropout_option,
    metrics_json_option,
    mode_option,
    persistent_grad_option,
    seed_option,
    selection_option,
    sparse_update_option,
)
from meprop.training import OPTIMIZERS

MODE_HELP = ("per_example: each example keeps its own top-k gradient entries (sparse products); "
             "unified: one k-set for the whole minibatch (small dense products)")


@click.group()
def main():
    """meProp: sparsified back propagation (Sun et al., ICML 2017)."""


@main.command()
@click.option("--k", type=click.IntRange(min=0), default=20, show_default=True,
              help="Gradient entries kept per layer in backprop; 0 means dense (the baseline).")
@mode_option(MODE_HELP)
@selection_option()
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True,
              help="Training epochs; the epoch with the best dev accuracy is kept.")
@click.option("--batch-size", type=click.IntRange(min=1), default=10, show_default=True,
              help="Images per minibatch (the paper uses 10).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam", show_default=True,
              help="Adam or AdaGrad.")
@click.option("--lr", type=float, default=None,
              help="Learning rate [default: 0.001 for Adam, 0.1 for AdaGrad].")
@click.option("--hidden", type=click.IntRange(min=1), default=500, show_default=True,
              help="Units per hidden layer.")
@click.option("--layers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Number of hidden layers.")
@dropout_option(0.0)
@seed_option("Seed for initialisation, shuffling and random selection.")
@device_option()
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder holding mnist/*.gz (else $MEPROP_DATA, else ~/.cache/meprop, "
              "downloading there).")
@persistent_grad_option()
@sparse_update_option()
@metrics_json_option()
@click.option("--limit", type=click.IntRange(min=1), default=None, hidden=True,
              help="Train on the first N training images only (for quick checks).")
def mnist(k, mode, selection, epochs, batch_size, optimizer, lr, hidden, layers, dropout, seed,
          device, data_dir, persistent_grad, sparse_update, metrics_json, limit):
    """Train the paper's MLP (784-500-500-10, ReLU) on MNIST with meProp.

    The first 5,000 training images are the dev set; the epoch with the best dev accuracy is
    kept and its test accuracy reported, with training and backprop time and the fraction of
    weight rows each backward touched.
    """
    from data import DataError
    from data import mnist as mnist_data
    from data.datasets import locate
    from meprop.mnist import MLPConfig, train_mnist
    from meprop.training import resolve_device, write_metrics_json

    try:
        tensors = mnist_data.load(locate("mnist", data_dir))
        device = resolve_device(device)
    except (DataError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    config = MLPConfig(hidden=hidden, layers=layers, k=k or None, mode=mode, selection=selection,
                       dropout=dropout)
    metrics = train_mnist(config, tensors, epochs=epochs, batch_size=batch_size,
                          optimizer=optimizer, lr=lr, seed=seed, device=device, limit=limit,
                          persistent_grad=persistent_grad, sparse_update=sparse_update)
    click.echo(json.dumps(metrics, indent=2, sort_keys=True))
    if metrics_json:
        write_metrics_json(metrics_json, metrics)


@main.group()
def data():
    """Data sets: where they are found, downloads."""


@data.command("list")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder to look in first (then $MEPROP_DATA, then the cache).")
@click.option("--wsj-dir", type=click.Path(file_okay=False), default=None,
              help="Your LDC Penn Treebank copy (wsj/00 ... wsj/24), for ptb-wsj.")
def data_list(data_dir, wsj_dir):
    """Show each named data set and where it was found. Downloads nothing."""
    from data.datasets import describe

    for name, description, where in describe(data_dir, wsj_dir):
        click.echo(f"{name}\n  {description}\n  found: {where}")


@main.command("convert-ptb")
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="CoNLL-X file to write (atomically; - for standard output).")
@click.option("--split", type=click.Choice(["train", "dev", "test"]), default=None,
              help="Only this split [default: all sentences in file order].")
@click.option("--task", type=click.Choice(["parse", "tag"]), default="parse", show_default=True,
              help="Which standard splits: parsing (WSJ 02-21/22/23) or tagging "
              "(00-18/19-21/22-24). The NLTK sample has one fixed split by file for both.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Where to find ptb-sample when SOURCE is that name.")
@click.option("--wsj-dir", type=click.Path(file_okay=False), default=None,
              help="Your LDC WSJ copy when SOURCE is ptb-wsj.")
def convert_ptb(source, output, split, task, data_dir, wsj_dir):
    """Convert Penn Treebank trees to dependencies (head rules as Penn2Malt), as CoNLL-X.

    SOURCE is treebank.zip, a folder of .mrg files (an LDC copy: wsj/00 ... wsj/24), or a
    dataset name: ptb-sample (found like every data set) or ptb-wsj (with --wsj-dir).
    """
    from data import DataError, conll, ptb
    from data.datasets import REGISTRY, locate, locate_wsj

    try:
        if source == "ptb-sample":
            source = locate("ptb-sample", data_dir) / REGISTRY["ptb-sample"].files[0].path
        elif source == "ptb-wsj":
            source = locate_wsj(wsj_dir)
        sentences = list(ptb.convert(source, split=split, task=task))
        conll.write(sentences, output)
    except DataError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {len(sentences)} sentences to {output}", err=True)


if __name__ == "__main__":
    main()
