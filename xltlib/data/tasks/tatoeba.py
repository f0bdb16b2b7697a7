"""Tatoeba sentence retrieval: LASER's line-aligned copy (112 languages), the language codes, and its registry entry.

XTREME's own ``tatoeba/`` copy sorts its English side (line i is not the translation of line i), so only
``tatoeba-laser/`` is read (see the data MANIFEST).
"""
from __future__ import annotations

from pathlib import Path

from xltlib.data.formats import DataError, load_hub, need_file, read_lines
from xltlib.data.languages import resource_table
from xltlib.data.tasks.spec import Task

LANGUAGE_TABLE = resource_table()

# XTREME's 41 Tatoeba languages (ISO 639-1) -> the ISO 639-3 code LASER's files use, from the one language table.
TATOEBA_CODES = {lang: LANGUAGE_TABLE.loc[lang, "iso3"] for lang in (
    "af ar az bg bn de el es et eu fa fi fr he hi hu id it ja jv ka kk ko lt ml mr nl pl pt ro ru sw ta te th tl tr "
    "uk ur vi zh").split()}
TATOEBA_ISO1 = {v: k for k, v in TATOEBA_CODES.items()}
# LASER's Tatoeba test set covers 112 languages (Artetxe & Schwenk 2019); those outside XTREME's 41 keep
# their ISO 639-3 code as the language name.
LASER_TATOEBA = tuple("""afr amh ang ara arq arz ast awa aze bel ben ber bos bre bul cat cbk ceb ces cha cmn cor csb cym
dan deu dsb dtp ell epo est eus fao fin fra fry gla gle glg gsw heb hin hrv hsb hun hye ido ile ina ind isl ita jav
jpn kab kat kaz khm kor kur kzj lat lfn lit lvs mal mar max mhr mkd mon nds nld nno nob nov oci orv pam pes pms pol
por ron rus slk slv spa sqi srp swe swg swh tam tat tel tgl tha tuk tur tzl uig ukr urd uzb vie war wuu xho yid yue
zsm""".split())


def read_tatoeba_local(data_dir: Path, lang: str) -> list[dict]:
    """Line-aligned LASER Tatoeba (XTREME's own copy sorts the English side, so it is not used)."""
    code = TATOEBA_CODES.get(lang, lang)
    base = Path(data_dir) / "tatoeba-laser"
    layout = "tatoeba-laser/tatoeba.{xxx}-eng.{xxx} and .eng (ISO 639-3 codes)"
    src = need_file(base / f"tatoeba.{code}-eng.{code}", layout)
    eng = need_file(base / f"tatoeba.{code}-eng.eng", layout)
    a, b = read_lines(src), read_lines(eng)
    if len(a) != len(b):
        raise DataError(f"{src} has {len(a)} lines but {eng} has {len(b)}; they must be line-aligned")
    return [dict(id=i, group=i, text_a=x, text_b=y, label=-1) for i, (x, y) in enumerate(zip(a, b))]


def read_tatoeba_hub(lang: str) -> list[dict]:
    ds = load_hub("google/xtreme", f"tatoeba.{TATOEBA_CODES.get(lang, lang)}", "validation")
    return [dict(id=i, group=i, text_a=r["source_sentence"], text_b=r["target_sentence"], label=-1)
            for i, r in enumerate(ds)]


TATOEBA = Task(
    name="tatoeba", kind="retrieval",
    languages=tuple(sorted(TATOEBA_CODES)) + tuple(c for c in LASER_TATOEBA if c not in TATOEBA_ISO1),
    metric="acc@1", local_reader=read_tatoeba_local, hub_reader=read_tatoeba_hub,
    layout="tatoeba-laser/tatoeba.{xxx}-eng.{xxx}", row_aligned=False,
    notes="LASER Tatoeba, each language with its own English side",
)
