"""Training loop for the parser: oracle minibatches, dev UAS each epoch, best model kept."""

import time
from dataclasses import asdict, dataclass

import torch

from data.vocab import Vocab
from meprop.nn import use_persistent_grad
from meprop.optim import touched_weights
from meprop.training import (
    BackpropClock,
    load_checkpoint,
    make_optimizer,
    restore_training_state,
    resume_path,
    save_checkpoint,
    save_training_state,
    seed_everything,
    synchronize,
    train_epoch,
)
from parser.data import (
    ROOT,
    build_vocabs,
    check_parsed,
    check_same_trees,
    make_examples,
    normalize_word,
    word_counts,
)
from parser.decode import DECODE_BATCH, parse_sentences
from parser.features import N_TAG_FEATURES, N_WORD_FEATURES
from parser.model import ParserConfig, ParserModel
from parser.scorer import AttachmentScore

# Adam at 0.003 beat 0.001 (slower) and 0.01 (unstable) on EWT dev with batches of 10,000.
DEFAULT_LR = {"adam": 0.003, "adagrad": 0.01}


@dataclass
class TrainOptions:
    epochs: int = 30
    batch_size: int = 10000
    optimizer: str = "adam"
    lr: float = None
    seed: int = 1
    min_word_freq: int = 2
    persistent_grad: bool = False  # meprop.use_persistent_grad on the model
    sparse_update: bool = False  # the optimizer updates only the rows meProp touched
    embeddings: str = None  # text file of pre-trained word vectors
    word_dropout: float = 0.0  # alpha: a word of training count c becomes UNK w.p. a / (a + c)
    average: float = 0.0  # decay of an exponential moving average of the weights; 0 = none
    tag_dropout: float = 0.0  # probability that a word's POS feature becomes the unknown tag
    predicted_tags_rate: float = 0.5  # share of transitions given predicted POS (if supplied)


def model_payload(model, vocabs):
    """The shipped/predict checkpoint: config, vocabularies, weights — plain data only."""
    return {"config": asdict(model.config), "vocabs": {k: v.to_dict() for k, v in vocabs.items()},
            "model": model.state_dict()}


def load_model(path, device="cpu"):
    """``(model, vocabs)`` from a checkpoint written by :func:`model_payload`."""
    payload = load_checkpoint(path)
    if not {"config", "vocabs", "model"} <= payload.keys() or "n_labels" not in payload["config"]:
        raise ValueError(f"{path} is not a parser checkpoint")
    vocabs = {name: Vocab.from_dict(data) for name, data in payload["vocabs"].items()}
    model = ParserModel(ParserConfig(**payload["config"]))
    model.load_state_dict({k: v.float() for k, v in payload["model"].items()})
    return model.to(device), vocabs


def evaluate(model, vocabs, gold_sentences, batch_size=DECODE_BATCH):
    predicted = parse_sentences(model, [s.copy() for s in gold_sentences], vocabs, batch_size)
    score = AttachmentScore()
    for gold, pred in zip(gold_sentences, predicted, strict=True):
        score.add(gold, pred)
    return score


def word_dropout(counts, alpha, unk_id):
    """A batch transform: each word feature (the first 18 columns) becomes UNK with probability
    ``alpha / (alpha + count)`` (Kiperwasser & Goldberg, 2016), so the UNK embedding is trained
    on the kind of words that are unknown at test time: the rare ones. ``counts``: training
    count per word id (infinite for NULL, UNK and ROOT, which are never dropped)."""
    drop_probability = alpha / (alpha + counts)

    def transform(features):
        words = features[:, :N_WORD_FEATURES]
        dropped = torch.rand(words.shape, device=words.device) < drop_probability[words]
        return torch.cat([words.masked_fill(dropped, unk_id), features[:, N_WORD_FEATURES:]], 1)

    return transform


def tag_dropout(rate, unk_id, first_tag_id):
    """A batch transform: each POS feature (columns 18-35) of a real word (id ``first_tag_id``
    or above; not NULL or ROOT) becomes the unknown tag with probability ``rate``. A parser
    trained on gold tags leans on them and falls further than the tagger's error rate on
    predicted ones; hiding some tags makes it use the words as well."""

    def transform(features):
        tags = features[:, N_WORD_FEATURES:N_WORD_FEATURES + N_TAG_FEATURES]
        dropped = (torch.rand(tags.shape, device=tags.device) < rate) & (tags >= first_tag_id)
        return torch.cat([features[:, :N_WORD_FEATURES], tags.masked_fill(dropped, unk_id),
                          features[:, N_WORD_FEATURES + N_TAG_FEATURES:]], 1)

    return transform


def predicted_tag_features(train_sentences, predicted_sentences, vocabs, pos_column,
                           transitions):
    """The POS feature columns [n, 18] of the oracle configurations of ``predicted_sentences``:
    the training sentences again, with POS from a tagger (jackknifed, so that its errors are
    those it makes on unseen text). Raises ``ValueError`` unless they are the same sentences
    (words and trees), since each row must line up with the gold-tag row it may replace."""
    check_same_trees(train_sentences, predicted_sentences)
    features, predicted_transitions, _ = make_examples(predicted_sentences, vocabs, pos_column)
    if not torch.equal(predicted_transitions, transitions):
        raise ValueError("the predicted-tag file gives other oracle transitions")
    return features[:, N_WORD_FEATURES:N_WORD_FEATURES + N_TAG_FEATURES].contiguous()


def mix_predicted_tags(features, predicted_tags, rate, generator):
    """``features`` with the POS columns of a random share ``rate`` of the rows taken from
    ``predicted_tags``: the parser learns from gold and from predicted tags, so it neither
    trusts tags blindly nor loses what clean tags teach."""
    chosen = torch.rand(len(features), generator=generator) < rate
    mixed = features.clone()
    columns = slice(N_WORD_FEATURES, N_WORD_FEATURES + N_TAG_FEATURES)
    mixed[chosen.to(features.device), columns] = predicted_tags[chosen.to(predicted_tags.device)]
    return mixed


def _compose(transforms):
    """One batch transform applying each of ``transforms`` (None where there is none)."""
    transforms = [t for t in transforms if t is not None]
    if not transforms:
        return None

    def transform(features):
        for each in transforms:
            features = each(features)
        return features

    return transform


def weight_average(model, decay):
    """An exponential moving average of ``model``'s weights (``torch.optim.swa_utils``): dev
    scores and saved models use it. Averaging the last steps' weights smooths the noise of
    Adam's updates, which the per-epoch model selection otherwise picks up."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))


def make_optimizer_for(model, options):
    lr = options.lr or DEFAULT_LR[options.optimizer]
    buffers = touched_weights(model) if options.sparse_update else None
    if options.optimizer == "adagrad":  # Chen & Manning's settings
        return make_optimizer("adagrad", model.parameters(), lr, adagrad_eps=1e-6,
                              weight_decay=1e-8, buffers=buffers)
    return make_optimizer(options.optimizer, model.parameters(), lr, buffers=buffers)


def _vocabs_and_config(config_overrides, train_sentences, state, min_word_freq):
    """The vocabularies and the model configuration: a resumed run's, or built from the data."""
    if state:
        vocabs = {name: Vocab.from_dict(data) for name, data in state["vocabs"].items()}
        return vocabs, ParserConfig(**state["config"])
    vocabs = build_vocabs(train_sentences, config_overrides["pos_column"], min_word_freq)
    config = ParserConfig(n_words=len(vocabs["words"]), n_tags=len(vocabs["tags"]),
                          n_labels=len(vocabs["labels"]), **config_overrides)
    return vocabs, config


def _input_transform(train_sentences, vocabs, options, device):
    """The training batches' word and tag dropout as one transform (None: neither)."""
    words_transform = tags_transform = None
    if options.word_dropout:
        counts = word_counts(train_sentences, vocabs["words"]).to(device)
        words_transform = word_dropout(counts, options.word_dropout, vocabs["words"].unk_index)
    if options.tag_dropout:
        tags_transform = tag_dropout(options.tag_dropout, vocabs["tags"].unk_index,
                                     vocabs["tags"].index(ROOT) + 1)
    return _compose([words_transform, tags_transform])


def _epoch_data(features, predicted_tags, options, epoch, device):
    """An epoch's order of the transitions, and its features (with predicted POS mixed in).
    Seeded per epoch so that a resumed run sees the same batches as an uninterrupted one."""
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(
        options.seed * 1000 + epoch)).to(device)
    if predicted_tags is None:
        return order, features
    return order, mix_predicted_tags(
        features, predicted_tags, options.predicted_tags_rate,
        torch.Generator().manual_seed(options.seed * 1000 + epoch + 500))


def train_parser(config_overrides, train_sentences, dev_sentences, options, out,
                 device=torch.device("cpu"), resume=False, progress=True, log=print,
                 predicted_tag_sentences=None):
    """Train; after each epoch parse dev, keep the best model at ``out``.

    ``config_overrides``: ParserConfig fields other than the vocabulary sizes.
    ``predicted_tag_sentences``: the training sentences with predicted POS; each epoch a share
    ``options.predicted_tags_rate`` of the transitions takes its POS features from them.
    A training checkpoint (model, optimizer, epoch, best score) is kept at ``out.resume``
    so ``resume=True`` continues an interrupted run. Returns a flat metrics dict.
    """
    check_parsed(train_sentences, dev_sentences)
    seed_everything(options.seed)
    state = load_checkpoint(resume_path(out)) if resume and resume_path(out).exists() else None
    vocabs, config = _vocabs_and_config(config_overrides, train_sentences, state,
                                        options.min_word_freq)
    features, transitions, skipped = make_examples(train_sentences, vocabs, config.pos_column)
    log(f"{len(features)} training transitions from {len(train_sentences) - skipped} sentences; "
        f"{skipped} non-projective sentences skipped")
    if not len(features):
        raise ValueError("no training transitions: every training sentence is unparsed or "
                         "non-projective")
    predicted_tags = None
    if predicted_tag_sentences is not None:
        predicted_tags = predicted_tag_features(train_sentences, predicted_tag_sentences, vocabs,
                                                config.pos_column, transitions).to(device)
        changed = (predicted_tags != features[:, N_WORD_FEATURES:N_WORD_FEATURES + N_TAG_FEATURES])
        log(f"predicted POS for {options.predicted_tags_rate:.0%} of the transitions each epoch "
            f"({changed.any(1).float().mean().item():.1%} of them differ from gold)")
    model = ParserModel(config).to(device)
    use_persistent_grad(model, options.persistent_grad or options.sparse_update)
    if options.embeddings and not state:
        found = model.load_pretrained(options.embeddings, vocabs["words"], normalize_word)
        log(f"pre-trained vectors for {found} of {len(vocabs['words'])} words")
    optimizer = make_optimizer_for(model, options)
    average = weight_average(model, options.average) if options.average else None
    best = {"dev_uas": -1.0, "best_epoch": 0}
    first_epoch, elapsed, backprop = 1, 0.0, 0.0
    if state:
        first_epoch, best, elapsed, backprop = restore_training_state(state, model, optimizer)
        if average is not None and "average" in state:
            average.load_state_dict(state["average"])
        log(f"resuming after epoch {state['epoch']} (best dev UAS {best['dev_uas']:.2f})")
    features, transitions = features.to(device), transitions.to(device)
    transform = _input_transform(train_sentences, vocabs, options, device)
    scored = model if average is None else average.module  # what dev sees and `out` keeps
    clock = BackpropClock(device)
    clock.seconds = backprop
    touched_sum = steps = 0
    for epoch in range(first_epoch, options.epochs + 1):
        synchronize(device)
        start = time.perf_counter()
        order, epoch_features = _epoch_data(features, predicted_tags, options, epoch, device)
        loss, epoch_touched, epoch_steps = train_epoch(
            model, epoch_features, transitions, order, options.batch_size, optimizer, clock,
            desc=f"epoch {epoch}/{options.epochs}", progress=progress, transform=transform,
            after_step=None if average is None else lambda: average.update_parameters(model))
        touched_sum += epoch_touched
        steps += epoch_steps
        score = evaluate(scored, vocabs, dev_sentences)
        synchronize(device)
        elapsed += time.perf_counter() - start
        log(f"epoch {epoch}: loss {loss.item():.4f}, dev UAS {score.uas:.2f} LAS {score.las:.2f}")
        if score.uas > best["dev_uas"]:
            best = {**score.metrics("dev_"), "best_epoch": epoch}
            save_checkpoint(out, model_payload(scored, vocabs))
        save_training_state(out, model_payload(model, vocabs), optimizer, epoch, best, elapsed,
                            clock.seconds,
                            extra=None if average is None else {"average": average.state_dict()})
    return {
        **best,
        "train_seconds": elapsed,
        "backprop_seconds": clock.seconds,
        "rows_touched": touched_sum / steps if steps else None,
        "train_transitions": len(features),
        "skipped_non_projective": skipped,
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
