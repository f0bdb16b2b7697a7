"""The rest of the XTREME-R suite: readers (made data and the real folder), task kinds, XQuAD-R, suite table."""
from __future__ import annotations

import json

import numpy as np
import torch
import pandas as pd
import pytest

from xltlib.data import tasks as T
from xltlib.config.schema import ConfigError
from xltlib.config.validate import load_config
from xltlib.evaluation.task_types import KINDS, build_xquad_r, split_sentences
from xltlib.reporting.tables import suite_table
from xltlib.training.objectives import build_objective
from xltlib.data.synthetic import make_smoke_data
from xltlib.training.loop import train_model


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return make_smoke_data(tmp_path_factory.mktemp("suite-data"))


# ------------------------------------------------------------------------------------------- readers
@pytest.mark.parametrize("task,lang,keys", [
    ("xcopa", "sw", {"premise", "question", "choices", "label"}),
    ("udpos", "de", {"tokens", "tags", "sent_id"}),
    ("panx", "fr", {"tokens", "tags"}),
    ("xquad", "de", {"context", "question", "answers"}),
    ("mlqa", "en", {"context", "question", "answers"}),
    ("lareqa", "de", {"context", "question", "answers"}),
])
def test_readers_give_the_kind_records(made, task, lang, keys):
    recs = T.load_records(task, lang, made)
    assert recs and keys <= set(recs[0]) and {"id", "group"} <= set(recs[0])


def test_train_files(made):
    assert len(T.load_train_records("xcopa", made)) == 24
    assert len(T.load_train_records("panx", made)) == 40
    # XQuAD and MLQA train on TyDiQA-GoldP English and share its checkpoint; LAReQA reads the same file for its own
    for task in ("xquad", "mlqa", "lareqa"):
        assert T.get_task(task).training_task == ("lareqa" if task == "lareqa" else "tydiqa")
        assert len(T.load_train_records(task, made)) == 28
    with pytest.raises(ValueError, match="no training file"):
        T.load_train_records("xnli", made)


def test_xcopa_question_type_comes_from_the_reference_language(made, tmp_path):
    # th says "effect" in every row of the real data; the reader takes the type from test-et by idx
    import shutil

    shutil.copytree(made / "xcopa", tmp_path / "xcopa")
    rows = [json.loads(line) for line in (tmp_path / "xcopa" / "test-sw.jsonl").read_text().splitlines()]
    truth = [r["question"] for r in rows]
    (tmp_path / "xcopa" / "test-sw.jsonl").write_text("\n".join(json.dumps(dict(r, question="effect")) for r in rows))
    assert [r["question"] for r in T.load_records("xcopa", "sw", tmp_path)] == truth
    assert "cause" in truth


def test_udpos_rows_align_by_sent_id(made, tmp_path):
    import shutil

    shutil.copytree(made / "udpos-pud", tmp_path / "udpos-pud")
    text = (tmp_path / "udpos-pud" / "fr.conllu").read_text().strip("\n").split("\n\n")
    (tmp_path / "udpos-pud" / "fr.conllu").write_text("\n\n".join(text[::-1]) + "\n")  # reversed, like Icelandic
    en, fr = T.load_records("udpos", "en", tmp_path), T.load_records("udpos", "fr", tmp_path)
    assert [r["sent_id"] for r in en] == [r["sent_id"] for r in fr]
    assert [r["tags"] for r in en] == [r["tags"] for r in fr]


def test_bad_inputs_name_what_is_wrong(made, tmp_path):
    import shutil

    with pytest.raises(ValueError, match="task 'xcopa' has no language 'de'; its languages: en, et"):
        T.load_records("xcopa", "de", made)
    shutil.copytree(made / "udpos-pud", tmp_path / "udpos-pud")
    bad = tmp_path / "udpos-pud" / "de.conllu"
    bad.write_text(bad.read_text().replace("\tNOUN\t", "\tNOUNY\t", 1))
    with pytest.raises(T.DataError, match=r"de\.conllu, sentence s\d+: UPOS tag 'NOUNY'"):
        T.load_records("udpos", "de", tmp_path)
    shutil.copytree(made / "panx", tmp_path / "panx")
    (tmp_path / "panx" / "dev-de.tsv").write_text("de1\tO\nde2\tB-PER\textra\n")
    with pytest.raises(T.DataError, match=r"dev-de\.tsv, line 2"):
        T.load_records("panx", "de", tmp_path)
    with pytest.raises(T.DataError, match="Mewsli-X has no offline copy"):
        T.load_records("mewslix", "en", made)
    with pytest.raises(T.DataError, match="TyDiQA-GoldP dev"):
        T.load_records("tydiqa", "en", made)


def test_grid_rejects_tasks_that_cannot_be_fine_tuned(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("name: x\nsmoke: true\ngrid: {model: [tiny-random], task: [tatoeba]}\n")
    with pytest.raises(ConfigError, match="grid.task 'tatoeba' .* cannot be fine-tuned"):
        load_config(p)


# --------------------------------------------------------------------------------------- task kinds
KIND_CASES = [("xcopa", "sw"), ("udpos", "de"), ("panx", "de"), ("xquad", "de"), ("lareqa", "de")]


@pytest.mark.parametrize("task,lang", KIND_CASES)
@pytest.mark.parametrize("method", ["baseline", "rs_da"])
def test_every_kind_trains_and_scores(made, task, lang, method):
    t = T.get_task(task)
    kind = KINDS[t.kind]
    obj = build_objective(method, {}, data_dir=made)
    records = T.load_train_records(task, made) if t.protocol == "train_file" else T.load_records(task, "en", made)
    model, tok, log = train_model("tiny-random", records[:16], task_type=kind, task=t, num_labels=kind.num_labels(t),
                                  objective=obj, seed=1, epochs=1, batch_size=8, lr=1e-3, warmup_ratio=0.1,
                                  weight_decay=0.01, max_length=32, bf16=False)
    assert log and all(np.isfinite(r["loss"]) for r in log)
    rows = kind.evaluate(model, tok, t, {"en": T.load_records(task, "en", made)[:6],
                                         lang: T.load_records(task, lang, made)[:6]}, batch_size=4, max_length=32,
                         bf16=False)
    df = pd.DataFrame(rows)
    score = df[df["metric"] == "score"]
    assert sorted(score["language"]) == sorted(["en", lang])
    assert score["value"].between(0, 1).all()
    assert (score["ci_low"] <= score["ci_high"]).all() and score[["ci_low", "ci_high"]].stack().between(0, 1).all()
    if t.kind != "token_classification":  # a mean's percentile CI holds the mean; micro-F1's need not
        assert (score["ci_low"] <= score["value"] + 1e-9).all() and (score["value"] <= score["ci_high"] + 1e-9).all()


def test_rs_da_rewrites_tagging_words_one_for_one(made):
    t = T.get_task("panx")
    records = T.load_train_records("panx", made)
    kind = KINDS[t.kind]
    from xltlib.models.load import load_tokenizer

    tok = load_tokenizer("tiny-random")
    obj = build_objective("rs_da", {}, data_dir=made)
    plain = kind.train_features(t, records, tok, 32, build_objective("baseline"), np.random.default_rng(0))
    noisy = kind.train_features(t, records, tok, 32, obj, np.random.default_rng(0))
    assert [len(f["input_ids"]) for f in plain] == [len(f["input_ids"]) for f in noisy]  # one word for one word
    assert [f["labels"] for f in plain] == [f["labels"] for f in noisy]  # tags unchanged
    assert any(a["input_ids"] != b["input_ids"] for a, b in zip(plain, noisy))  # some words substituted


def test_qa_checkpoint_is_shared_by_the_span_tasks_and_lareqa_has_its_dual_encoder():
    from xltlib.config.schema import RunConfig
    from xltlib.config.grid import expand_grid

    cfg = RunConfig.model_validate(dict(name="x", grid=dict(model=["m"], task=["xquad", "mlqa", "lareqa", "xnli"],
                                                            method=["baseline"], seed=[1])))
    ck = {c.task: c.checkpoint for c in expand_grid(cfg)}
    assert ck["xquad"] == ck["mlqa"] == "m__tydiqa__baseline__s1"
    assert ck["lareqa"] == "m__lareqa__baseline__s1"  # trained on the same TyDiQA file, as a dual encoder
    assert ck["xnli"] == "m__xnli__baseline__s1"


# ------------------------------------------------------------------------------------------ XQuAD-R
def _qa(qid, ctx, ans):
    return dict(id=qid, question=f"what about {qid}?", context=ctx, answers=dict(text=[ans], answer_start=[ctx.index(ans)]))


def test_qa_scores_refuse_repeated_question_ids_and_the_tydiqa_train_reader_numbers_them(made, tmp_path):
    import shutil

    from xltlib.models.load import load_tokenizer

    src = made / "tydiqa"
    shutil.copytree(src, tmp_path / "tydiqa")
    path = next((tmp_path / "tydiqa").rglob("*.train.json"))
    doc = json.loads(path.read_text())
    for art in doc["data"]:
        for par in art["paragraphs"]:
            for qa in par["qas"]:
                qa["id"] = "0"  # as the offline TyDiQA-GoldP English train copy does for 1,651 questions
    path.write_text(json.dumps(doc))
    recs = T.load_train_records("xquad", tmp_path)
    assert len({r["id"] for r in recs}) == len(recs)
    tok = load_tokenizer("tiny-random")
    model = KINDS["span_extraction"].load_model("tiny-random", None, 2, "mean")
    same = [dict(r, id="0") for r in recs[:3]]
    for task in ("xquad", "lareqa"):
        t = T.get_task(task)
        with pytest.raises(ValueError, match="question id '0' repeats"):
            KINDS[t.kind].evaluate(model, tok, t, {"en": same}, batch_size=4, max_length=32, bf16=False)


def test_dual_encoder_pairs_questions_with_their_answer_sentence_and_masks_shared_answers():
    from xltlib.models.load import load_tokenizer

    tok = load_tokenizer("tiny-random")
    kind = KINDS["answer_retrieval"]
    recs = [_qa("a", "Cats purr. Dogs bark.", "bark"), _qa("b", "Cats purr. Dogs bark.", "Dogs"),
            _qa("c", "Cats purr. Dogs bark.", "purr")]
    feats = kind.train_features(T.get_task("lareqa"), recs, tok, 32, build_objective("baseline"), np.random.default_rng(0))
    assert [f["input_ids"][1] for f in feats] == tok(["Dogs bark.", "Dogs bark.", "Cats purr."])["input_ids"]
    assert [f["input_ids"][0] for f in feats] == tok([r["question"] for r in recs])["input_ids"]
    assert feats[0]["labels"] == feats[1]["labels"] != feats[2]["labels"]  # one answer sentence, one id
    batch = kind.collate(feats, tok.pad_token_id)
    assert batch["input_ids"].shape[0] == 6  # [q0, a0, q1, a1, q2, a2]
    model = kind.load_model("tiny-random", None, 1, "mean")
    out = model(**batch)
    assert out.logits.shape == (3, 3)
    # question a's only negative is c's answer: b's answer is the same sentence, masked out of a's row
    logits = out.logits.detach()
    assert logits[0, 1] < -1e3 and logits[1, 0] < -1e3 and logits[0, 2] > -1e3
    # RS-RP's m-fold repetition along dim 0: the repeated pairs are masked, the loss stays finite
    rep = {k: torch.cat([v, v]) for k, v in batch.items()}
    assert torch.isfinite(model(**rep).loss)


def test_split_sentences():
    text = "First one. Second one! Third?"
    assert [text[a:b] for a, b in split_sentences(text, "en")] == ["First one.", "Second one!", "Third?"]
    zh = "第一句。第二句！"
    assert [zh[a:b] for a, b in split_sentences(zh, "zh")] == ["第一句。", "第二句！"]
    th = "ประโยคแรก ประโยคที่สอง"
    assert len(split_sentences(th, "th")) == 2


def test_xquad_r_relevant_answers_are_the_answer_sentence_in_every_language():
    def rec(qid, ctx, ans):
        return dict(id=qid, question=f"q{qid}", context=ctx, answers=dict(text=[ans], answer_start=[ctx.index(ans)]))

    by_lang = {"en": [rec("a", "Cats purr. Dogs bark.", "bark"), rec("b", "Cats purr. Dogs bark.", "purr")],
               "de": [rec("a", "Katzen schnurren. Hunde bellen.", "bellen"),
                      rec("b", "Katzen schnurren. Hunde bellen.", "schnurren")]}
    cands, queries = build_xquad_r(by_lang)
    assert cands == ["Cats purr.", "Dogs bark.", "Katzen schnurren.", "Hunde bellen."]
    assert queries["en"][1] == [{1, 3}, {0, 2}] and queries["de"][1] == [{1, 3}, {0, 2}]


# ---------------------------------------------------------------------------------------- suite table
def test_suite_table_averages_languages_then_tasks():
    rows = []
    for task, vals in {"xnli": {"en": 0.8, "de": 0.6}, "panx": {"en": 0.5, "de": 0.3, "fr": 0.1}}.items():
        for lang, v in vals.items():
            rows.append(dict(task=task, method="baseline", seed=1, language=lang, language2="", metric="score",
                             value=v, n=10))
    table = suite_table(pd.DataFrame(rows))
    # xnli 70.0, panx 30.0 -> suite 50.0; without English: xnli 60.0, panx 20.0 -> 40.0
    assert table.loc["baseline", "xnli"] == "70.0" and table.loc["baseline", "panx"] == "30.0"
    assert table.loc["baseline", "XTREME-R avg"] == "50.0" and table.loc["baseline", "XTREME-R avg xx≠en"] == "40.0"


def test_suite_table_keeps_pawsx_out_of_the_xtreme_r_average():
    rows = [dict(task=task, method="baseline", seed=1, language=lang, language2="", metric="score", value=v, n=10)
            for task, vals in {"xnli": {"en": 0.8, "de": 0.6}, "pawsx": {"en": 0.9, "de": 0.7}}.items()
            for lang, v in vals.items()]
    table = suite_table(pd.DataFrame(rows))
    assert table.loc["baseline", "pawsx (XTREME (v1))"] == "80.0"  # shown under its own benchmark
    assert table.loc["baseline", "XTREME-R avg"] == "70.0"  # XNLI alone


# ------------------------------------------------------------------------------------- the real folder
@pytest.mark.data
def test_real_suite_folders(data_dir):
    assert len(T.load_records("xcopa", "th", data_dir)) == 500
    th = T.load_records("xcopa", "th", data_dir)
    assert {r["question"] for r in th} == {"cause", "effect"}  # the file itself says "effect" everywhere
    assert len(T.load_train_records("xcopa", data_dir)) == 400
    ud = {lang: T.load_records("udpos", lang, data_dir) for lang in ("en", "is")}
    assert len(ud["en"]) == 1000 and [r["sent_id"] for r in ud["en"]] == [r["sent_id"] for r in ud["is"]]
    assert len(T.load_records("panx", "sw", data_dir)) == 1000
    assert len(T.load_train_records("panx", data_dir)) == 20000
    xq = {lang: T.load_records("xquad", lang, data_dir) for lang in ("en", "th")}
    assert len(xq["en"]) == 1190 and [r["id"] for r in xq["en"]] == [r["id"] for r in xq["th"]]
    assert len(T.load_records("mlqa", "hi", data_dir)) == 507
    assert len(T.load_train_records("xquad", data_dir)) == 3696
