"""Parallel data readers for alignment (made data; real-data checks are marked)."""
from __future__ import annotations

import pytest

from xltlib.data.parallel import PARALLEL, load_parallel, read_conllu_texts
from xltlib.data.tasks import DataError


def _conllu(sents):
    out = []
    for sid, text in sents:
        out += [f"# sent_id = {sid}", f"# text = {text}", "1\tx\tx\tX\t_\t_\t0\troot\t_\t_", ""]
    return "\n".join(out) + "\n"


def test_pud_aligns_by_sent_id_not_position(tmp_path):
    d = tmp_path / "udpos-pud"
    d.mkdir()
    (d / "en.conllu").write_text(_conllu([("s1", "one"), ("s2", "two"), ("s3", "three")]))
    (d / "is.conllu").write_text(_conllu([("s3", "þrír"), ("s1", "einn"), ("s2", "tveir")]))
    xx, en = load_parallel("pud", tmp_path, ["is"], None)["is"]
    assert list(zip(xx, en)) == [("einn", "one"), ("tveir", "two"), ("þrír", "three")]


def test_conllu_text_before_sent_id_is_an_error(tmp_path):
    p = tmp_path / "x.conllu"
    p.write_text("# text = orphan\n")
    with pytest.raises(DataError, match="line 1"):
        read_conllu_texts(p)


def test_muse_skips_identical_and_repeated_words(tmp_path):
    d = tmp_path / "dictionaries" / "muse"
    d.mkdir(parents=True)
    (d / "en-de.txt").write_text("the der\nthe die\nhaus haus\nhouse haus\ncat katze\ndog hund\n")
    xx, en = load_parallel("muse", tmp_path, ["de"], 10)["de"]
    assert list(zip(en, xx)) == [("the", "der"), ("house", "haus"), ("cat", "katze"), ("dog", "hund")]
    assert load_parallel("muse", tmp_path, ["de"], 2)["de"] == (["der", "haus"], ["the", "house"])


def test_muse_malformed_line_names_file_and_line(tmp_path):
    d = tmp_path / "dictionaries" / "muse"
    d.mkdir(parents=True)
    (d / "en-fr.txt").write_text("cat chat\nbroken\n")
    with pytest.raises(DataError, match=r"en-fr.txt, line 2"):
        load_parallel("muse", tmp_path, ["fr"], None)


def test_languages_a_source_lacks_are_skipped_and_unknown_source_errors(tmp_path):
    assert "sw" not in PARALLEL["pud"].languages
    assert load_parallel("pud", tmp_path, ["sw"], None) == {}
    with pytest.raises(ValueError, match="registered: tatoeba"):
        load_parallel("nope", tmp_path, ["de"], None)


@pytest.mark.data
def test_real_pud_and_muse(data_dir):
    pud = load_parallel("pud", data_dir, ["de", "is"], None)
    assert len(pud["de"][0]) == len(pud["is"][0]) == 1000
    assert pud["is"][1] == pud["de"][1]  # same English sentences, aligned by sent_id
    words = load_parallel("muse", data_dir, ["de"], 500)["de"]
    assert len(words[0]) == 500 and all(x != e for x, e in zip(*words))
