"""Confusable words: what a keyword spotter must learn to reject, found by a rule.

A model that hears "no" must not fire on "go", "so" or "nose". Those words are close to the
keyword in *sound*, so the rule works on phonemes, not spelling:

1. Every word of :data:`VOCABULARY` (about 500 common short English words, a documented list,
   never a table per keyword) and the wanted word are turned into phonemes by espeak-ng's own
   phonemizer (``espeak_TextToPhonemes``, the ``en-us`` voice of the ``espeakng-loader`` wheel),
   then split into phoneme tokens (:func:`tokens`); stress marks are dropped.
2. A candidate is a *neighbour* when its tokens are one edit (substitution, insertion or
   deletion of one phoneme) from the wanted word's: "go" (g oU) and "nose" (n oU z) for "no"
   (n oU). It *rhymes* when it ends in the same stressed vowel and coda: "press" (p r E s) for
   "yes" (j E s).
3. Homophones (the same tokens, "know" for "no") are left out: taught as ``_unknown_``, they
   would be label noise, since the model cannot hear the difference.
4. Candidates are ranked: neighbours before rhymes, then fewer edits, then the vocabulary's
   order (roughly by frequency). :func:`confusable_words` returns the first ``count``, never a
   wanted word.

The rule works for any wanted word espeak-ng can say; a word with no neighbour in the vocabulary
gets fewer confusables (possibly none), which :func:`confusable_words` reports by its length.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

_VOCABULARY_TEXT = """
    the be to of and a in that have it for not on with he as you do at this but his by from they
    we say her she or an will my one all would there their what so up out if about who get which
    go me when make can like time no just him know take people into year your good some could
    them see other than then now look only come its over think also back after use two how our
    work first well way even new want because any these give day most us is was are had were
    said did got made went came saw gave took knew thought told found left felt kept let put set
    yes yet less guess mess chess yeah press dress bless stress guest best rest test west nest
    vest desk yell sell tell bell fell shell well spell smell jet net pet wet bet get met set
    jest mesh flesh fresh yes yell yam yak yawn yarn year yield young youth yolk
    no go so low show toe though now nose snow slow blow glow grow flow throw row sew tow bow
    know note nor near new knee nod not knot nut nail name nine night noise north none noon
    home hope road rope soap boat coat goat vote code cold gold hold old told bold roll hole
    goal pole bowl coal mole soul sold both most post host ghost toast coast gross close
    up cup pup pop top hop shop stop step stack stuck truck luck duck buck tuck us bus but
    putt mud bud gum sum rum hum run sun fun gun done none one won ton son rub tub cub
    down town gown crown brown drown clown noun round sound found pound ground mount count
    cow how wow vow plow loud cloud proud shout out doubt house mouse mouth south
    left lift loft raft deaf chef theft laughed craft draft shift gift sift soft often
    right write bright fight light might night sight tight white kite bite rite ride wide side
    hide time lime ripe type wipe five hive dive drive wife life knife rice nice ice mice
    on an in and end own one gone john don con ron lawn dawn on odd
    off of cough boss loss toss moss cloth moth doff scoff
    stop spot slot shot hot cot dot got lot rot pot plot knot top chop drop
    go goes gold ghost goat goal grow glow gow
    bed bird cat dog happy tree three free tea see sea key bee me we he she pea
    zero hero nero arrow barrow sparrow
    four for door floor more shore core sore pour war
    six sticks sick kicks fix mix picks
    seven heaven eleven
    eight ate late gate hate mate rate state weight wait great
    tree trip try tray true
    marvin martin carving starving
    sheila shield feeler
    learn turn burn earn fern yearn
    visual casual usual
    follow hollow swallow wallow
    forward foreword backward awkward
    bad bag bat bit boat boot cap cut fan fat fit fog foot gap gas hat hit hot hug jam jog
    keep kid kiss lab lap lip lock log map mat mop net nut pad pan pig pin pit rag rat red
    rib rig rip sad sap sip sit tag tap tin tip tug van vet wax web wig win yak zip
"""
VOCABULARY: tuple[str, ...] = tuple(dict.fromkeys(_VOCABULARY_TEXT.split()))
"""Candidate words: common short English words (pronouns, verbs, numbers, the Speech Commands
vocabulary and many one-syllable words around the usual keywords), roughly most frequent first.
Duplicates are dropped in order."""

ENGLISH_VOICE = "en-us"
"""The voice whose phonemizer decides the sounds (espeak-ng's American English)."""

PHONEMES: tuple[str, ...] = (
    "aI@", "aU@", "i@3", "aI", "aU", "eI", "OI", "oU", "tS", "dZ", "A@", "e@", "i@", "O@", "U@",
    "3:", "A:", "i:", "u:", "O:", "@L", "@2", "@5", "I2", "I#", "E2", "e#", "a#", "aa", "r-",
)  # fmt: skip
"""Multi-character espeak-ng phoneme mnemonics of English, matched longest first; any other
character is a phoneme of its own."""

_DROP = set("',_!=%")
_VARIANT = set("25#")
_VOWEL_START = set("aeiouAEIOUV@03")


def tokens(phonemes: str) -> tuple[str, ...]:
    """Split an espeak-ng phoneme string (``n'oU``) into phoneme tokens (``("n", "oU")``).

    Stress and syllable marks are dropped; multi-character mnemonics (:data:`PHONEMES`) are
    matched longest first, and a variant mark (``2``, ``5``, ``#``) stays with its phoneme.
    """
    text = phonemes.replace(" ", "")
    out: list[str] = []
    i = 0
    ordered = sorted(PHONEMES, key=len, reverse=True)
    while i < len(text):
        if text[i] in _DROP:
            i += 1
            continue
        match = next((p for p in ordered if text.startswith(p, i)), text[i])
        i += len(match)
        # Variant marks ("O2", "t2", "I#") belong to the phoneme before them.
        while i < len(text) and text[i] in _VARIANT:
            match += text[i]
            i += 1
        out.append(match)
    return tuple(out)


@cache
def phonemize(word: str) -> str:
    """espeak-ng's phonemes of ``word`` (its ASCII mnemonics, e.g. ``j'Es`` for "yes")."""
    from kwscompress.data.synth.espeak import engine

    lib = engine()._lib
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_TextToPhonemes.argtypes = [
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_int,
        ctypes.c_int,
    ]
    lib.espeak_SetVoiceByName(ENGLISH_VOICE.encode())
    buffer = ctypes.create_string_buffer(word.encode("utf-8") + b"\0")
    pointer = ctypes.c_void_p(ctypes.addressof(buffer))
    parts = []
    # One call phonemizes one clause; loop until espeak-ng has consumed the text.
    while pointer.value:
        result = lib.espeak_TextToPhonemes(ctypes.byref(pointer), 1, 0)  # 1: UTF-8, 0: ASCII
        if result:
            parts.append(result.decode("ascii", "replace"))
    return " ".join(parts).strip()


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (unit costs)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def rhyme(phones: Sequence[str]) -> tuple[str, ...]:
    """The last vowel and everything after it (the whole word if it has no vowel)."""
    for i in range(len(phones) - 1, -1, -1):
        if phones[i][0] in _VOWEL_START:
            return tuple(phones[i:])
    return tuple(phones)


def confusable_words(
    word: str,
    count: int,
    exclude: Sequence[str] = (),
    vocabulary: Sequence[str] = VOCABULARY,
) -> list[str]:
    """Up to ``count`` words that sound close to ``word`` (the rule in the module docstring).

    :param word: the wanted word.
    :param count: how many to return at most.
    :param exclude: words never returned (the wanted words).
    :param vocabulary: candidate words (default :data:`VOCABULARY`).
    """
    target = tokens(phonemize(word))
    banned = {w.lower() for w in exclude} | {word.lower()}
    ranked = []
    seen: set[str] = set()
    for order, candidate in enumerate(vocabulary):
        if candidate in seen or candidate.lower() in banned:
            continue
        seen.add(candidate)
        phones = tokens(phonemize(candidate))
        if phones == target or not phones:
            continue  # a homophone would be label noise
        distance = edit_distance(phones, target)
        rhymes = rhyme(phones) == rhyme(target) and distance <= 2
        if distance <= 1 or rhymes:
            ranked.append((distance > 1, distance, order, candidate))
    return [candidate for *_, candidate in sorted(ranked)[:count]]


OTHER_SPEECH = ("other-phrase", "other-fragment", "other-nonword")
"""Folders of ``_unknown_`` speech that is not one whole filler word: two-word phrases, the
first part of a word, and pronounceable non-words."""

_ONSETS = ("p", "b", "t", "d", "k", "g", "f", "v", "s", "z", "S", "m", "n", "l", "r", "w", "h")
_NUCLEI = ("a", "E", "I", "0", "V", "U", "i:", "u:", "eI", "aI", "oU", "aU", "3:", "A:", "O:")
_CODAS = ("", "p", "t", "k", "m", "n", "N", "l", "s", "z", "f", "T", "st", "nd", "mp")


def other_speech(
    kind: str, rng: np.random.Generator, words: Sequence[str], wanted: Sequence[str]
) -> tuple[str, float]:
    """Text to speak for one clip of an :data:`OTHER_SPEECH` folder and the share to keep.

    ``phrase``: two of ``words`` (fillers and confusables) in one breath. ``fragment``: one of
    ``words``, of which the caller keeps the first 35-65 %. ``nonword``: a random two-syllable
    phoneme string (espeak-ng ``[[...]]`` input) that is not one edit from a wanted word.

    :returns: ``(text, keep)``: the text for espeak-ng and the share of the audio to keep.
    """
    if kind == "other-phrase":
        first, second = rng.choice(list(words), size=2, replace=False)
        return f"{first} {second}", 1.0
    if kind == "other-fragment":
        return str(rng.choice(list(words))), float(rng.uniform(0.35, 0.65))
    if kind == "other-nonword":
        targets = [tokens(phonemize(w)) for w in wanted]
        while True:
            syllables = [
                (
                    str(rng.choice(_ONSETS)),
                    str(rng.choice(_NUCLEI)),
                    str(rng.choice(_CODAS)),
                )
                for _ in range(int(rng.integers(1, 3)))
            ]
            spelled = "'" + "".join("".join(s) for s in syllables)
            if all(edit_distance(tokens(spelled), t) > 1 for t in targets):
                return f"[[{spelled}]]", 1.0
    raise ValueError(f"unknown kind of other speech {kind!r}; valid: {', '.join(OTHER_SPEECH)}")
