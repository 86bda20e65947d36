"""Titles and descriptions of recordings, from what lies around the place and what is heard."""
from __future__ import annotations

import numpy as np

PLACE_NOUNS = ("street", "farmland", "meadow", "woodland", "lakeshore", "bare ground")
"""What a recordist would call a place of each class, indexed by class id."""
MENTION_FRACTION = 0.15  # a class is mentioned when it holds at least this fraction


def _ranked(fractions: np.ndarray) -> list[int]:
    order = np.argsort(-np.asarray(fractions), kind="stable")
    return [int(c) for c in order if fractions[c] >= MENTION_FRACTION] or [int(order[0])]


def title(fractions: np.ndarray) -> str:
    """E.g. "Meadow near woodland": the dominant place, and the second one if it is mentioned."""
    ranked = _ranked(fractions)
    text = PLACE_NOUNS[ranked[0]].capitalize()
    if len(ranked) > 1:
        text += f" near {PLACE_NOUNS[ranked[1]]}"
    return text


def description(fractions: np.ndarray, phrases: dict[int, str], event: str | None) -> str:
    """E.g. "Traffic and birdsong, with a dog barking.": what is heard, loudest share first."""
    heard: list[str] = []
    for c in _ranked(fractions):
        phrase = phrases.get(c)
        if phrase and phrase not in heard:
            heard.append(phrase)
    if not heard:
        heard = ["quiet background noise"]
    if len(heard) == 1 or any(" and " in h for h in heard):
        text = ", ".join(heard)
    else:
        text = ", ".join(heard[:-1]) + " and " + heard[-1]
    if event:
        text += f", with {event}"
    return text[0].upper() + text[1:] + "."
