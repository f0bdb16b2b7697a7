"""Language metadata for the XTREME-R / Tatoeba target languages.

Columns of :func:`resource_table` (index: ISO 639-1 code, named ``language``):

``name``, ``script``, ``family``, ``genus``
    Written by hand (general linguistic knowledge, not copied from a single
    source).  ``family`` is the top-level family as in the XTREME language
    table (Hu et al., 2020), ``genus`` the usual sub-branch (e.g. Germanic,
    Bantu).  Descriptive only; nothing here is computed from them.
``iso3``
    The ISO 639-3 code (individual language where Tatoeba/LASER uses one,
    e.g. ``cmn``, ``swh``, ``pes``).
``cc100_tokens_m``, ``size_gib``
    Tokens (millions) and size (GiB) of the language's CC-100 data as
    published in Conneau et al. (2020), "Unsupervised Cross-lingual
    Representation Learning at Scale", ACL 2020, Appendix A, Table 6
    ("Languages and statistics for CC-100 as used by XLM-R").  The numbers
    were copied from the public transcription of that table in the GitHub
    repository mayhewsw/multilingual-data-stats, file ``cc-100/cc-100.csv``
    (not re-read from the PDF).  Where that source is doubtful the value is
    left NaN and ``cc100_note`` says why:

    * ``sv`` and ``uk``: the transcription's author (blog post
      mayhewsw.github.io, 2020-12-20, "Multilingual Data Stats") flags the
      published Ukrainian (6.5M tokens for 84.6 GiB) and Swedish rows as
      implausible and says he checked them with the XLM-R authors; his CSV
      (sv 12950M / 85 GiB, uk 6960M / 84.6 GiB) no longer matches the
      published table.  Since the correct values are unclear, both are NaN.
    * ``my``: the table has two Burmese rows (15M tok / 0.4 GiB and
      56M tok / 1.6 GiB; one is presumably the Zawgyi encoding) and the
      transcription does not say which is which.
    * ``ht``, ``qu``, ``wo``, ``yo``: not among XLM-R's 100 CC-100 languages.
    * ``zh``: the Simplified-Chinese row (46.9 GiB) is used; Traditional
      Chinese is a separate row (176M tokens, 16.6 GiB).
    * ``ja``, ``th``, ``zh``: token counts are tiny relative to GiB (no
      whitespace segmentation); use ``size_gib``, not tokens, as the measure.

:func:`to_iso1` maps ISO 639-1, ISO 639-2/B, ISO 639-3 (incl. the
individual-language codes Tatoeba uses) and BCP-47-like tags (``zh-Hans``,
``pt_BR``) to the ISO 639-1 code.
"""

from __future__ import annotations

import math

import pandas as pd

NaN = math.nan

# iso1: (name, script, family, genus, iso3, cc100_tokens_m, size_gib, note)
_LANGS: dict[str, tuple] = {
    # --- XTREME-R languages (50) -----------------------------------------
    "af": ("Afrikaans", "Latin", "Indo-European", "Germanic", "afr", 242, 1.3, ""),
    "ar": ("Arabic", "Arabic", "Afro-Asiatic", "Semitic", "ara", 2869, 28.0, ""),
    "az": ("Azerbaijani", "Latin", "Turkic", "Oghuz", "aze", 783, 6.5, ""),
    "bg": ("Bulgarian", "Cyrillic", "Indo-European", "Slavic", "bul", 5487, 57.5, ""),
    "bn": ("Bengali", "Bengali", "Indo-European", "Indo-Aryan", "ben", 525, 8.4, ""),
    "de": ("German", "Latin", "Indo-European", "Germanic", "deu", 10297, 66.6, ""),
    "el": ("Greek", "Greek", "Indo-European", "Greek", "ell", 4285, 46.9, ""),
    "en": ("English", "Latin", "Indo-European", "Germanic", "eng", 55608, 300.8, ""),
    "es": ("Spanish", "Latin", "Indo-European", "Romance", "spa", 9374, 53.3, ""),
    "et": ("Estonian", "Latin", "Uralic", "Finnic", "est", 843, 6.1, ""),
    "eu": ("Basque", "Latin", "Basque", "Basque", "eus", 270, 2.0, ""),
    "fa": ("Persian", "Arabic", "Indo-European", "Iranian", "pes", 13259, 111.6, ""),
    "fi": ("Finnish", "Latin", "Uralic", "Finnic", "fin", 6730, 54.3, ""),
    "fr": ("French", "Latin", "Indo-European", "Romance", "fra", 9780, 56.8, ""),
    "gu": ("Gujarati", "Gujarati", "Indo-European", "Indo-Aryan", "guj", 140, 1.9, ""),
    "he": ("Hebrew", "Hebrew", "Afro-Asiatic", "Semitic", "heb", 3399, 31.6, ""),
    "hi": ("Hindi", "Devanagari", "Indo-European", "Indo-Aryan", "hin", 1715, 20.2, ""),
    "ht": ("Haitian Creole", "Latin", "Creole", "French-based creole", "hat", NaN, NaN,
           "not in XLM-R's CC-100"),
    "hu": ("Hungarian", "Latin", "Uralic", "Ugric", "hun", 7807, 58.4, ""),
    "id": ("Indonesian", "Latin", "Austronesian", "Malayo-Polynesian", "ind", 22704, 148.3, ""),
    "it": ("Italian", "Latin", "Indo-European", "Romance", "ita", 4983, 30.2, ""),
    "ja": ("Japanese", "Kanji/Kana", "Japonic", "Japanese", "jpn", 530, 69.3,
           "token count not comparable (no whitespace segmentation)"),
    "jv": ("Javanese", "Latin", "Austronesian", "Malayo-Polynesian", "jav", 24, 0.2, ""),
    "ka": ("Georgian", "Georgian", "Kartvelian", "Kartvelian", "kat", 469, 9.1, ""),
    "kk": ("Kazakh", "Cyrillic", "Turkic", "Kipchak", "kaz", 476, 6.4, ""),
    "ko": ("Korean", "Hangul", "Koreanic", "Korean", "kor", 5644, 54.2, ""),
    "lt": ("Lithuanian", "Latin", "Indo-European", "Baltic", "lit", 1835, 13.7, ""),
    "ml": ("Malayalam", "Malayalam", "Dravidian", "South Dravidian", "mal", 313, 7.6, ""),
    "mr": ("Marathi", "Devanagari", "Indo-European", "Indo-Aryan", "mar", 175, 2.8, ""),
    "ms": ("Malay", "Latin", "Austronesian", "Malayo-Polynesian", "zsm", 1318, 8.5, ""),
    "my": ("Burmese", "Myanmar", "Sino-Tibetan", "Lolo-Burmese", "mya", NaN, NaN,
           "two Burmese rows in Table 6 (15M tok/0.4 GiB and 56M tok/1.6 GiB); "
           "unclear which is Unicode"),
    "nl": ("Dutch", "Latin", "Indo-European", "Germanic", "nld", 5025, 29.3, ""),
    "pa": ("Punjabi", "Gurmukhi", "Indo-European", "Indo-Aryan", "pan", 68, 0.8, ""),
    "pl": ("Polish", "Latin", "Indo-European", "Slavic", "pol", 6490, 44.6, ""),
    "pt": ("Portuguese", "Latin", "Indo-European", "Romance", "por", 8405, 49.1, ""),
    "qu": ("Quechua", "Latin", "Quechuan", "Quechuan", "que", NaN, NaN,
           "not in XLM-R's CC-100"),
    "ro": ("Romanian", "Latin", "Indo-European", "Romance", "ron", 10354, 61.4, ""),
    "ru": ("Russian", "Cyrillic", "Indo-European", "Slavic", "rus", 23408, 278.0, ""),
    "sw": ("Swahili", "Latin", "Niger-Congo", "Bantu", "swh", 275, 1.6, ""),
    "ta": ("Tamil", "Tamil", "Dravidian", "South Dravidian", "tam", 595, 12.2, ""),
    "te": ("Telugu", "Telugu", "Dravidian", "South-Central Dravidian", "tel", 249, 4.7, ""),
    "th": ("Thai", "Thai", "Kra-Dai", "Tai", "tha", 1834, 71.7,
           "token count not comparable (no whitespace segmentation)"),
    "tl": ("Tagalog", "Latin", "Austronesian", "Malayo-Polynesian", "tgl", 556, 3.1,
           "listed as Filipino in Table 6"),
    "tr": ("Turkish", "Latin", "Turkic", "Oghuz", "tur", 2736, 20.9, ""),
    "uk": ("Ukrainian", "Cyrillic", "Indo-European", "Slavic", "ukr", NaN, NaN,
           "published row (6.5M tok, 84.6 GiB) flagged as implausible; left NaN"),
    "ur": ("Urdu", "Arabic", "Indo-European", "Indo-Aryan", "urd", 730, 5.7, ""),
    "vi": ("Vietnamese", "Latin", "Austroasiatic", "Vietic", "vie", 24757, 137.3, ""),
    "wo": ("Wolof", "Latin", "Niger-Congo", "Atlantic", "wol", NaN, NaN,
           "not in XLM-R's CC-100"),
    "yo": ("Yoruba", "Latin", "Niger-Congo", "Volta-Niger", "yor", NaN, NaN,
           "not in XLM-R's CC-100"),
    "zh": ("Chinese", "Han", "Sino-Tibetan", "Sinitic", "cmn", 259, 46.9,
           "Simplified row; Traditional is separate (176M tok, 16.6 GiB); "
           "token count not comparable"),
    # --- further Tatoeba languages ---------------------------------------
    "am": ("Amharic", "Ge'ez", "Afro-Asiatic", "Semitic", "amh", 68, 0.8, ""),
    "be": ("Belarusian", "Cyrillic", "Indo-European", "Slavic", "bel", 362, 4.3, ""),
    "ca": ("Catalan", "Latin", "Indo-European", "Romance", "cat", 1752, 10.1, ""),
    "cs": ("Czech", "Latin", "Indo-European", "Slavic", "ces", 2498, 16.3, ""),
    "cy": ("Welsh", "Latin", "Indo-European", "Celtic", "cym", 141, 0.8, ""),
    "da": ("Danish", "Latin", "Indo-European", "Germanic", "dan", 7823, 45.6, ""),
    "gl": ("Galician", "Latin", "Indo-European", "Romance", "glg", 495, 2.9, ""),
    "hr": ("Croatian", "Latin", "Indo-European", "Slavic", "hrv", 3297, 20.5, ""),
    "hy": ("Armenian", "Armenian", "Indo-European", "Armenian", "hye", 421, 5.5, ""),
    "is": ("Icelandic", "Latin", "Indo-European", "Germanic", "isl", 505, 3.2, ""),
    "km": ("Khmer", "Khmer", "Austroasiatic", "Khmer", "khm", 36, 1.5, ""),
    "kn": ("Kannada", "Kannada", "Dravidian", "South Dravidian", "kan", 169, 3.3, ""),
    "lv": ("Latvian", "Latin", "Indo-European", "Baltic", "lvs", 1198, 8.8, ""),
    "mk": ("Macedonian", "Cyrillic", "Indo-European", "Slavic", "mkd", 449, 4.8, ""),
    "mn": ("Mongolian", "Cyrillic", "Mongolic", "Mongolic", "khk", 248, 3.0, ""),
    "ne": ("Nepali", "Devanagari", "Indo-European", "Indo-Aryan", "npi", 237, 3.8, ""),
    "no": ("Norwegian", "Latin", "Indo-European", "Germanic", "nob", 8494, 49.0, ""),
    "si": ("Sinhala", "Sinhala", "Indo-European", "Indo-Aryan", "sin", 243, 3.6, ""),
    "sk": ("Slovak", "Latin", "Indo-European", "Slavic", "slk", 3525, 23.2, ""),
    "sl": ("Slovenian", "Latin", "Indo-European", "Slavic", "slv", 1669, 10.3, ""),
    "sq": ("Albanian", "Latin", "Indo-European", "Albanian", "sqi", 918, 5.4, ""),
    "sr": ("Serbian", "Cyrillic", "Indo-European", "Slavic", "srp", 843, 9.1, ""),
    "sv": ("Swedish", "Latin", "Indo-European", "Germanic", "swe", NaN, NaN,
           "published row flagged as implausible; left NaN"),
    "uz": ("Uzbek", "Latin", "Turkic", "Karluk", "uzb", 91, 0.7, ""),
}

# Extra 3-letter aliases (ISO 639-2/B, macrolanguage and individual codes).
_ALIASES: dict[str, str] = {
    "arb": "ar", "ara": "ar", "aze": "az", "azj": "az", "ger": "de", "gre": "el",
    "ekk": "et", "baq": "eu", "fas": "fa", "per": "fa", "pes": "fa", "fre": "fr",
    "msa": "ms", "may": "ms", "zsm": "ms", "bur": "my", "mya": "my", "dut": "nl",
    "quz": "qu", "quy": "qu", "que": "qu", "rum": "ro", "swa": "sw", "swh": "sw",
    "fil": "tl", "zho": "zh", "chi": "zh", "cmn": "zh", "geo": "ka", "kat": "ka",
    "cze": "cs", "wel": "cy", "arm": "hy", "ice": "is", "lav": "lv", "mac": "mk",
    "mon": "mn", "khk": "mn", "nep": "ne", "nor": "no", "nob": "no", "slo": "sk",
    "alb": "sq", "als": "sq", "uzn": "uz", "pan": "pa", "pnb": "pa",
}

_COLUMNS = ["name", "script", "family", "genus", "iso3", "cc100_tokens_m", "size_gib",
            "cc100_note"]


def resource_table() -> pd.DataFrame:
    """Language metadata and CC-100 sizes (see module docstring for sources)."""
    df = pd.DataFrame.from_dict(_LANGS, orient="index", columns=_COLUMNS)
    df.index.name = "language"
    df["cc100_tokens_m"] = df["cc100_tokens_m"].astype(float)
    df["size_gib"] = df["size_gib"].astype(float)
    return df.sort_index()


def _build_lookup() -> dict[str, str]:
    lut = {k: k for k in _LANGS}
    for k, row in _LANGS.items():
        lut[row[4]] = k
    lut.update(_ALIASES)
    return lut


_LOOKUP = _build_lookup()


def to_iso1(code: str) -> str:
    """Map an ISO 639-1/-2/-3 code or a tag like ``zh-Hans`` to ISO 639-1.

    Raises ``ValueError`` for codes not in the table.
    """
    if not isinstance(code, str):
        raise ValueError(f"unknown language code: {code!r}")
    c = code.strip().lower().replace("_", "-")
    if c in _LOOKUP:
        return _LOOKUP[c]
    primary = c.split("-")[0]
    if primary in _LOOKUP:
        return _LOOKUP[primary]
    raise ValueError(f"unknown language code: {code!r}")
