"""Titles and descriptions of recordings: what is audible, and where it was recorded.

The title names the loudest sound source and the place (its land cover), e.g. "Birdsong in
woodland" or "Traffic by farmland"; the description lists what is heard, loudest first, and the
incidental event, e.g. "Traffic, birdsong and people talking, with a dog barking.".
"""
from __future__ import annotations

PLACE_NOUNS = ("town", "farmland", "meadow", "woodland", "lakeshore", "bare ground")
"""What a recordist would call a place of each land-cover class, indexed by class id."""
_PREPOSITION = ("in", "by", "on", "in", "on", "on")


def title(dominant: str, land_cover: int) -> str:
    """E.g. "Birdsong in woodland": the loudest source (a name of
    :data:`model.synth.soundscape.SOURCES`) and the land cover of the place."""
    return f"{dominant.capitalize()} {_PREPOSITION[land_cover]} {PLACE_NOUNS[land_cover]}"


def description(phrases: dict[str, str], event: str | None) -> str:
    """E.g. "Traffic and birdsong, with a dog barking.": what is heard (phrases in loudness order)."""
    heard: list[str] = []
    for phrase in phrases.values():
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
