"""Query by text: a description of a sound ("church bells and traffic") turned into a query vector.

There is no text encoder in a bundle, so the text is matched against the words the gallery's
recordings were published with (their ``title`` and ``description``,
:data:`model.bundle.gallery.TEXT_COLUMNS`), and the query vector is made of the stored audio
embeddings of the recordings that match best. The heatmap is then drawn exactly as for any other
query (``geo.query.query_embeddings``).

Matching (:class:`TfidfMatcher`, scikit-learn's ``TfidfVectorizer`` fitted on the gallery): each
recording is one document, its title and description joined. Words are lower-cased runs of
letters and digits; English stop words (scikit-learn's ``ENGLISH_STOP_WORDS``) are dropped and
the rest go through :func:`stem`, a light suffix stripper written here (plural ``-s``/``-es``/
``-ies``, ``-ing``, ``-ed``; NLTK is not installed and no Snowball or Porter dependency is added:
"bells" and "bell" meet, "barking" and "bark" meet, but "waving" does not meet "wave" nor "buses"
"bus"). With ``n`` documents, ``df(t)`` of them containing the term ``t`` and ``tf(t, d)`` its
count in ``d`` (a query word in no document is ignored)::

    idf(t)    = ln((1 + n) / (1 + df(t))) + 1
    x_d[t]    = tf(t, d) * idf(t), then x_d / ||x_d||_2        (the same for the query text, x_q)
    score(d)  = x_d . x_q = cos(x_d, x_q)                      (0..1; 0 = no word in common)

Choosing (:func:`text_query_vector`): the recordings with ``score > 0``, best first, at most
``top_k`` (default :data:`DEFAULT_TOP_K`) of them, ``S``; their weights and the query vector are::

    w_i = score_i / sum_{j in S} score_j                        (the weights sum to 1)
    v   = sum_{i in S} w_i e_i                                   (e_i: the stored audio embedding)

the weighted mean of the raw embeddings, for either distance of the bundle (under ``cosine`` only
the direction of ``v`` matters, under ``euclidean`` it is the point the cells are measured from).
A text matching one recording alone gives that recording's own embedding.

A learned text encoder can replace the matcher: anything with ``scores(documents, text) ->
(n,)`` non-negative floats (:class:`TextMatcher`) can be passed as ``matcher``. Torch-free.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from geo.errors import QueryError
from model.bundle.gallery import TEXT_COLUMNS

DEFAULT_TOP_K = 10
_WORD = re.compile(r"[a-z0-9]+")
_VOWELS = set("aeiouy")
_UNDOUBLED = set("bdfgkmnprt")  # "running" -> "run", but "calling" keeps "call" and "buzzing" "buzz"


@dataclass(frozen=True)
class TextMatch:
    """A gallery recording used by a text query: its key, title, score (cosine, 0..1) and weight
    in the query vector (the weights of one query sum to 1)."""

    key: int
    title: str
    score: float
    weight: float


class TextMatcher(Protocol):
    """What turns a text into one non-negative score per document (0 = no match)."""

    def scores(self, documents: Sequence[str], text: str) -> np.ndarray:
        """Scores (n,) float64 of the ``n`` documents for ``text``."""
        ...


def stem(word: str) -> str:
    """A light suffix stripper for lower-case English words (module doc): ``-ies`` -> ``-y``,
    ``-es`` after ss/x/z/ch/sh, ``-s`` (not after s, u, i), then ``-ing``/``-ed`` (not ``-eed``) when at
    least three letters with a vowel remain (a doubled final b/d/f/g/k/m/n/p/r/t undoubled)."""
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 4 and word.endswith("es") and word[:-2].endswith(("ss", "x", "z", "ch", "sh")):
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s") and word[-2] not in "siu":
        word = word[:-1]
    for suffix in ("ing", "ed"):
        rest = word[:-len(suffix)]
        if word.endswith(suffix) and len(rest) >= 3 and _VOWELS & set(rest) and not word.endswith("eed"):
            if rest[-1] == rest[-2] and rest[-1] in _UNDOUBLED:
                rest = rest[:-1]
            return rest
    return word


def analyze(text: str) -> list[str]:
    """The terms of a text: lower-cased words, English stop words dropped, the rest :func:`stem`-ed."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return [stem(w) for w in _WORD.findall(str(text).lower()) if w not in ENGLISH_STOP_WORDS]


class TfidfMatcher:
    """Cosine similarity of TF-IDF vectors (formulas in the module doc), fitted on the documents."""

    def scores(self, documents: Sequence[str], text: str) -> np.ndarray:
        """``cos(x_d, x_q)`` (n,) float64; all 0 when no document or the text has any term."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(analyzer=analyze, norm="l2", smooth_idf=True)
        try:
            x = vectorizer.fit_transform(documents)
        except ValueError:  # an empty vocabulary: no document has a term
            return np.zeros(len(documents), np.float64)
        q = vectorizer.transform([text])
        return np.asarray((x @ q.T).toarray()).reshape(-1).astype(np.float64)


def documents(rows: pd.DataFrame) -> list[str]:
    """One text per gallery row: its ``title`` and ``description`` joined ("" where missing)."""
    parts = [rows[c].fillna("").astype(str) if c in rows.columns else pd.Series([""] * len(rows), index=rows.index)
             for c in TEXT_COLUMNS]
    return [" ".join(p.strip() for p in texts).strip() for texts in zip(*parts)]


def clean_text(text: str) -> str:
    """The text on one line (runs of white space made one space): how it is quoted and recorded."""
    return " ".join(str(text).split())


def text_query_vector(rows: pd.DataFrame, embeddings: np.ndarray, text: str, top_k: int = DEFAULT_TOP_K,
                      matcher: TextMatcher | None = None) -> tuple[np.ndarray, list[TextMatch]]:
    """The query vector (D,) float32 of ``text`` over a gallery (``rows`` with ``key``, ``title``,
    ``description``; ``embeddings`` (N, D) in the same order) and the recordings it is made of,
    best first: ``v = sum_i w_i e_i``, ``w_i = score_i / sum_j score_j`` over the at most ``top_k``
    recordings with ``score > 0`` (module doc). QueryError (one line) when none matches."""
    text = clean_text(text)
    if not text:
        raise QueryError("the text query is empty: describe the sound, e.g. \"church bells and traffic\"")
    if int(top_k) < 1:
        raise QueryError(f"the number of recordings of a text query must be at least 1, got {top_k}")
    if len(rows) != len(embeddings):
        raise QueryError(f"gallery: {len(rows)} rows but {len(embeddings)} embeddings")
    docs = documents(rows)
    scores = (matcher or TfidfMatcher()).scores(docs, text) if any(docs) else np.zeros(len(docs))
    order = np.argsort(-scores, kind="stable")
    chosen = [int(i) for i in order[:int(top_k)] if scores[i] > 0]
    if not chosen:
        with_text = sum(1 for d in docs if d)
        raise QueryError(f"no gallery recording's title or description matches \"{text}\" "
                         f"(the gallery has {with_text} recordings with text)")
    weights = scores[chosen] / scores[chosen].sum()
    vector = (weights[:, None] * np.asarray(embeddings, np.float64)[chosen]).sum(axis=0).astype(np.float32)
    keys = rows["key"].astype(int).to_numpy()
    titles = rows["title"].fillna("").astype(str).to_numpy() if "title" in rows.columns else [""] * len(rows)
    used = [TextMatch(int(keys[i]), str(titles[i]), float(scores[i]), float(w)) for i, w in zip(chosen, weights)]
    return vector, used
