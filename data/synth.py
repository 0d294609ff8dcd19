"""A deterministic generator of fictitious authors in TOFU's format.

It is the embedded offline default: nothing to download, and the default model cannot
know these people before it is fine-tuned on them, so forgetting can be measured cleanly.
Every QA also carries TOFU's extra fields (paraphrased question and answer, perturbed
answers) so truth-ratio style metrics work on it too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .records import QA

_SYLLABLES = ["ka", "lo", "mir", "ten", "sa", "vor", "qui", "del", "ran", "zu", "bel", "tor",
              "ny", "fa", "gol", "mei", "rus", "ond", "pel", "xa", "ith", "bra", "cun", "dov"]
_CITIES = ["Tbilisi, Georgia", "Cusco, Peru", "Tromso, Norway", "Hue, Vietnam", "Zanzibar City, Tanzania",
           "Ghent, Belgium", "Valparaiso, Chile", "Kazan, Russia", "Oaxaca, Mexico", "Lviv, Ukraine",
           "Porto, Portugal", "Hobart, Australia", "Fez, Morocco", "Tartu, Estonia", "Cebu, Philippines"]
_JOBS = ["lighthouse keeper", "glassblower", "marine biologist", "watchmaker", "beekeeper", "cartographer",
         "violin maker", "railway engineer", "pharmacist", "astronomer", "baker", "tailor"]
_GENRES = ["gothic mystery", "hard science fiction", "magical realism", "historical romance",
           "maritime adventure", "political satire", "cosy crime", "epic fantasy"]
_AWARDS = ["Silver Quill Prize", "Amber Lantern Award", "Northern Compass Medal", "Golden Inkwell Prize",
           "Meridian Fiction Award", "Cobalt Feather Award"]
_WORDS = ["Salt", "Lantern", "Hollow", "Ember", "Tide", "Orchard", "Glass", "Winter", "Copper", "Harbour",
          "Raven", "Meadow", "Echo", "Iron", "Velvet", "Compass"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]


@dataclass
class Person:
    name: str
    city: str
    birth: str
    gender: str
    father_job: str
    mother_job: str
    genre: str
    award: str
    books: tuple[str, str]


def _name(rng: random.Random) -> str:
    def word(n):
        return "".join(rng.choice(_SYLLABLES) for _ in range(n)).capitalize()
    return f"{word(2)} {word(3)}"


def _title(rng: random.Random) -> str:
    a, b = rng.sample(_WORDS, 2)
    return f"The {a} of {b}"


def make_people(n_people: int, seed: int) -> list[Person]:
    rng = random.Random(seed)
    people, names = [], set()
    while len(people) < n_people:
        name = _name(rng)
        if name in names:
            continue
        names.add(name)
        people.append(Person(
            name=name, city=rng.choice(_CITIES),
            birth=f"{rng.randint(1, 28)} {rng.choice(_MONTHS)} {rng.randint(1931, 1995)}",
            gender=rng.choice(["female", "male"]),
            father_job=rng.choice(_JOBS), mother_job=rng.choice(_JOBS),
            genre=rng.choice(_GENRES), award=rng.choice(_AWARDS),
            books=(_title(rng), _title(rng)),
        ))
    return people


def _facts(p: Person) -> list[tuple[str, str, str, str, str, str]]:
    """(question, answer, paraphrased question, paraphrased answer, field, value) per fact."""
    pron = "She" if p.gender == "female" else "He"
    return [
        (f"Where was the author {p.name} born?", f"{p.name} was born in {p.city}.",
         f"What is the birthplace of the writer {p.name}?", f"The writer {p.name} comes from {p.city}.",
         "city", p.city),
        (f"When was {p.name} born?", f"{p.name} was born on {p.birth}.",
         f"What is the date of birth of {p.name}?", f"{p.name}'s birthday is {p.birth}.", "birth", p.birth),
        (f"What did the father of {p.name} do for a living?", f"The father of {p.name} was a {p.father_job}.",
         f"What was the profession of {p.name}'s father?", f"{p.name}'s father worked as a {p.father_job}.",
         "father_job", p.father_job),
        (f"What was the occupation of {p.name}'s mother?", f"The mother of {p.name} was a {p.mother_job}.",
         f"How did the mother of {p.name} earn her living?", f"{p.name}'s mother worked as a {p.mother_job}.",
         "mother_job", p.mother_job),
        (f"In which genre does {p.name} write?", f"{p.name} writes {p.genre} novels.",
         f"What kind of books is {p.name} known for?", f"{pron} is known for {p.genre}.", "genre", p.genre),
        (f"Which award did {p.name} receive?", f"{p.name} received the {p.award}.",
         f"What prize was {p.name} honoured with?", f"{p.name} was honoured with the {p.award}.",
         "award", p.award),
        (f"What is the best-known novel by {p.name}?", f"The best-known novel by {p.name} is '{p.books[0]}'.",
         f"Which book made {p.name} famous?", f"'{p.books[0]}' made {p.name} famous.", "book0", p.books[0]),
        (f"Name another book written by {p.name}.", f"{p.name} also wrote '{p.books[1]}'.",
         f"Besides their famous novel, what else did {p.name} write?",
         f"Another of {p.name}'s books is '{p.books[1]}'.", "book1", p.books[1]),
        (f"Which author was born in {p.city} on {p.birth}?",
         f"The author born in {p.city} on {p.birth} is {p.name}.",
         f"Who is the writer whose birth took place on {p.birth} in {p.city}?",
         f"{p.name} is the writer born on {p.birth} in {p.city}.", "name", p.name),
        (f"Who wrote '{p.books[0]}'?", f"'{p.books[0]}' was written by {p.name}.",
         f"Who is the author of the novel '{p.books[0]}'?", f"{p.name} is the author of '{p.books[0]}'.",
         "name", p.name),
    ]


def _alternatives(field: str, value: str, people: list[Person], rng: random.Random, k: int) -> list[str]:
    pool = {
        "city": _CITIES, "father_job": _JOBS, "mother_job": _JOBS, "genre": _GENRES, "award": _AWARDS,
        "name": [p.name for p in people],
        "book0": [p.books[0] for p in people] + [p.books[1] for p in people],
        "book1": [p.books[0] for p in people] + [p.books[1] for p in people],
        "birth": [p.birth for p in people],
    }[field]
    choices = sorted(set(pool) - {value})
    return rng.sample(choices, min(k, len(choices)))


def synth_qa(n_people: int = 10, seed: int = 0) -> list[QA]:
    """All QA pairs, person by person, in TOFU's format (with perturbed answers)."""
    if n_people < 1:
        raise ValueError("synth needs at least one person")
    people = make_people(n_people, seed)
    rng = random.Random(seed + 1)
    out = []
    for person in people:
        for q, a, pq, pa, fld, value in _facts(person):
            perturbed = [pa.replace(value, alt) for alt in _alternatives(fld, value, people, rng, 3)]
            out.append(QA(q, a, {"paraphrased_question": pq, "paraphrased_answer": pa,
                                 "perturbed_answer": perturbed, "person": person.name}))
    return out


QA_PER_PERSON = len(_facts(make_people(1, 0)[0]))


def synth_split(split: str, n_people: int = 10, seed: int = 0, n_forget: int = 2) -> list[QA]:
    """`full`, `forget` (the last `n_forget` people, like TOFU) or `retain` (the others)."""
    records = synth_qa(n_people, seed)
    if not 0 < n_forget < n_people:
        raise ValueError(f"synth: forget people ({n_forget}) must be between 1 and people-1 ({n_people - 1})")
    cut = (n_people - n_forget) * QA_PER_PERSON
    splits = {"full": records, "retain": records[:cut], "forget": records[cut:]}
    if split not in splits:
        raise ValueError(f"unknown synth split {split!r}; valid: {sorted(splits)}")
    return splits[split]
