"""Curated searches and prompts precomputed into the book, so that a reader without a kernel
can open them in the browser (and notebook 12 narrates them)."""

from __future__ import annotations

__all__ = ["CURATED_PROMPTS", "CURATED_SEARCHES"]

#: (name, positives, negatives, activation threshold)
CURATED_SEARCHES = [
    ("sea and harbours, not politics",
     ["The ships sailed out of the harbour into the open sea.",
      "Fishing boats return to the port when the sea is rough.",
      "The navy kept a fleet of warships in the harbour."],
     ["The parliament voted on the new election law.",
      "The king signed a treaty with the neighbouring kingdom."], 0.0),
    ("music, not sport",
     ["She composed a symphony for orchestra and choir.",
      "The band released an album of rock songs.",
      "He played the piano and the violin in concerts."],
     ["The team won the football championship.",
      "The athlete ran the marathon in record time."], 0.0),
    ("dates in history",
     ["The war ended in 1945 with the surrender of Germany.",
      "The city was founded in 1703 by Peter the Great.",
      "The revolution began in 1789 in Paris."],
     ["The recipe uses flour, butter and sugar."], 0.0),
]

#: (name, prompt): the active-feature graph of every token
CURATED_PROMPTS = [
    ("a river", "The Nile is the longest river in Africa and flows into the Mediterranean Sea."),
    ("a composer", "Mozart was an Austrian composer of the Classical period."),
    ("a chemical element", "Oxygen is a chemical element with the symbol O and atomic number 8."),
]
