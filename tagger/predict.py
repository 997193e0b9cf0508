"""Loading a tagger checkpoint and filling the tag columns of sentences."""

import torch

from data.vocab import Vocab
from meprop.training import load_checkpoint
from tagger.data import PAIR_SEPARATOR, TAG_PAIRS, encode_inputs
from tagger.model import TaggerConfig, TaggerModel


def model_payload(model, vocabs):
    """The shipped/predict checkpoint: config, vocabularies, weights — plain data only."""
    from dataclasses import asdict

    return {"config": asdict(model.config),
            "vocabs": {name: vocab.to_dict() for name, vocab in vocabs.items()},
            "model": model.state_dict()}


def load_model(path, device="cpu"):
    """``(model, vocabs)`` from a checkpoint written by :func:`model_payload`."""
    payload = load_checkpoint(path)
    if not {"config", "vocabs", "model"} <= payload.keys() or "tag_sizes" not in payload["config"]:
        raise ValueError(f"{path} is not a tagger checkpoint")
    vocabs = {name: Vocab.from_dict(data) for name, data in payload["vocabs"].items()}
    model = TaggerModel(TaggerConfig(**payload["config"]))
    model.load_state_dict({name: value.float() for name, value in payload["model"].items()})
    return model.to(device).eval(), vocabs


def allowed_pairs(vocabs, device):
    """``{"upos": ids, "xpos": ids}`` of the UPOS/XPOS pairs seen in training, or None for a
    model of one column (or a checkpoint without the pairs)."""
    if TAG_PAIRS not in vocabs:
        return None
    split = [pair.split(PAIR_SEPARATOR) for pair in vocabs[TAG_PAIRS].itos]
    return {column: torch.tensor([vocabs[column].index(tags[i]) for tags in split],
                                 device=device)
            for i, column in enumerate(("upos", "xpos"))}


def _batches(model, sentences, vocabs, batch_size):
    """``(sentence indices, encoded inputs)`` of the non-empty sentences, similar lengths
    together."""
    device = next(model.parameters()).device
    order = sorted((i for i, s in enumerate(sentences) if len(s)), key=lambda i: len(sentences[i]))
    cache = {}
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        yield batch, [encode_inputs(sentences[i], vocabs, cache).to(device) for i in batch]


def tag_sentences(model, sentences, vocabs, batch_size=256):
    """Fill the model's columns (``upos``/``xpos``) of each sentence in place; returns them.

    A model of both columns predicts, for each word, a UPOS/XPOS pair seen in training.
    """
    pairs = allowed_pairs(vocabs, next(model.parameters()).device)
    for batch, inputs in _batches(model, sentences, vocabs, batch_size):
        with torch.no_grad():
            best = model.predict(inputs, pairs)
        for column, per_sentence in best.items():
            for i, tag_ids in zip(batch, per_sentence, strict=True):
                setattr(sentences[i], column, vocabs[column].decode(tag_ids.tolist()))
    return sentences


def tag_alternatives(model, sentences, vocabs, count=2, batch_size=256):
    """Each word's ``count`` best tag choices, best first: per sentence, per word, a list of
    ``({column: tag}, log-probability)``. A choice is a UPOS/XPOS pair seen in training for a
    model of both columns, else a tag of the model's one column; the log-probabilities are
    normalised over the choices. Raises ``ValueError`` for a model of two columns whose
    checkpoint has no pairs."""
    pairs = allowed_pairs(vocabs, next(model.parameters()).device)
    columns = list(pairs) if pairs else list(model.config.columns)
    alternatives = [[] for _ in sentences]
    for batch, inputs in _batches(model, sentences, vocabs, batch_size):
        for i, log_probs in zip(batch, model.choice_log_probs(inputs, pairs), strict=True):
            top, choices = log_probs.topk(min(count, log_probs.shape[1]), dim=1)
            tag_ids = {column: (pairs[column][choices] if pairs else choices).tolist()
                       for column in columns}
            alternatives[i] = [
                [({column: vocabs[column].itos[tag_ids[column][word][rank]]
                   for column in columns}, top[word, rank].item())
                 for rank in range(top.shape[1])]
                for word in range(len(log_probs))]
    return alternatives
