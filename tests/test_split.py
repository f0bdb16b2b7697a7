"""The split protocols and the training-set registry: what trains, what is scored, and their keys."""
from __future__ import annotations

import pytest

from xltlib.config.schema import ConfigError, ProtocolConfig
from xltlib.config.validate import load_config
from xltlib.core.registry import Registry, UnknownName
from xltlib.data.synthetic import make_smoke_data
from xltlib.data.split import Split, eval_records, make_split, train_records
from xltlib.data.tasks import DataError
from xltlib.data.trainsets import TRAIN_SETS, check_train_sets, load_train_set


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return make_smoke_data(tmp_path_factory.mktemp("data"))


def test_registry_names_what_is_registered():
    reg: Registry[int] = Registry("colour")
    reg.add("red", 1)
    reg.add("blue", 2)
    with pytest.raises(UnknownName, match=r"unknown colour 'green'; registered: red, blue"):
        reg.get("green")
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("red", 3)


def test_unknown_and_leaking_training_sets_are_refused():
    with pytest.raises(UnknownName, match="registered: xnli_dev_en, mnli"):
        check_train_sets("xnli", ["xnli_train"])
    with pytest.raises(ValueError, match="translations"):
        check_train_sets("xnli", ["xnli_test_en"])
    with pytest.raises(ValueError, match="shares 1,339 sentences"):
        check_train_sets("pawsx", ["pawsx_dev_en"])
    with pytest.raises(ValueError, match="trains task 'pawsx', not 'xnli'"):
        check_train_sets("xnli", ["pawsx_train_en"])
    # the same checks when the params are read, naming the key
    with pytest.raises(ConfigError, match=r"protocol.train_sets.xnli: .*xnli_test_en"):
        load_config(None, ["protocol.train_sets={xnli: [xnli_dev_en, xnli_test_en]}"])
    with pytest.raises(ConfigError, match=r"unknown training set 'nope'; registered: "):
        load_config(None, ["protocol.train_sets={pawsx: [nope]}"])


def test_zero_shot_trains_on_english_sets_and_scores_test(made):
    p = ProtocolConfig(name="zero_shot", max_eval=30)
    split = make_split("xnli", ["en", "de", "sw"], p, made)
    assert split.protocol == "zero_shot" and split.eval_split == "test"
    assert list(split.train_rows) == ["xnli_dev_en"] and split.n_train == len(load_train_set("xnli_dev_en", made))
    # the same scored row indices in every language, from the test files
    assert split.eval_ids["en"] == split.eval_ids["de"] == split.eval_ids["sw"] and len(split.eval_ids["en"]) == 30
    scored = eval_records(split, made)
    trained = train_records(split, made)
    assert not {r["text_a"] for r in scored["en"]} & {r["text_a"] for r in trained}
    assert sum(split.label_counts["en"]) == 30 and 0 < split.majority_rate() < 1


def test_keys_chain_on_what_they_depend_on(made):
    p = ProtocolConfig(name="zero_shot")
    a = make_split("pawsx", ["en", "de"], p, made)
    assert (a.train_key, a.eval_key) == (make_split("pawsx", ["en", "de"], p, made).train_key,
                                         make_split("pawsx", ["en", "de"], p, made).eval_key)
    fewer_languages = make_split("pawsx", ["en"], p, made)
    assert fewer_languages.train_key == a.train_key and fewer_languages.eval_key != a.eval_key
    capped = make_split("pawsx", ["en", "de"], ProtocolConfig(name="zero_shot", max_train=10), made)
    assert capped.train_key != a.train_key and capped.n_train == 10


def test_a_split_file_is_parsed_once_per_version(made, tmp_path):
    path = tmp_path / "xnli.json"
    with pytest.raises(FileNotFoundError, match="xnli.json missing: the data stage has not finished"):
        Split.load_cached(path)
    make_split("xnli", ["en", "de"], ProtocolConfig(name="zero_shot"), made).save(path)
    first = Split.load_cached(path)
    assert Split.load_cached(path) is first and first == Split.load(path)
    make_split("xnli", ["en"], ProtocolConfig(name="zero_shot"), made).save(path)  # the data stage ran again
    again = Split.load_cached(path)
    assert again is not first and again.languages == ["en"]
    path.unlink()
    with pytest.raises(FileNotFoundError):
        Split.load_cached(path)


def test_offline_dev_split_keeps_working(made):
    split = make_split("xnli", ["en", "de"], ProtocolConfig(name="offline_dev_split"), made)
    assert split.eval_split == "dev" and list(split.train_rows) == ["dev"]
    assert not set(split.train_rows["dev"]) & set(split.eval_ids["en"])


def test_missing_test_file_names_file_and_language(made, tmp_path):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(made, data)
    (data / "xnli" / "test-sw.tsv").unlink()
    with pytest.raises(DataError, match=r"xnli/test-sw.tsv.*language 'sw'"):
        make_split("xnli", ["en", "sw"], ProtocolConfig(name="zero_shot"), data)


def test_label_outside_the_label_set_names_file_and_line(tmp_path):
    (tmp_path / "nli-en").mkdir()
    (tmp_path / "nli-en" / "sick.tsv").write_text("a\tb\tneutral\nc\td\tmaybe\n")
    with pytest.raises(DataError, match=r"sick.tsv, line 2: label 'maybe'"):
        load_train_set("sick", tmp_path)


def test_every_training_set_has_a_reader_and_a_task():
    from xltlib.data.tasks import TASKS

    for name, ts in TRAIN_SETS.items():
        assert ts.task in TASKS and callable(ts.local_reader), name


@pytest.mark.data
def test_real_zero_shot_splits_never_score_a_trained_row(data_dir):
    p = ProtocolConfig(name="zero_shot", train_sets={"xnli": ["xnli_dev_en", "sick"]})
    xnli = make_split("xnli", ["en", "ar", "sw"], p, data_dir)
    assert xnli.eval_split == "test" and len(xnli.eval_ids["sw"]) == 5010 and xnli.label_counts["en"] == [1670] * 3
    assert xnli.n_train == 2490 + 9840
    pawsx = make_split("pawsx", ["en", "ko"], ProtocolConfig(name="zero_shot"), data_dir)
    assert pawsx.n_train == 8311 and len(pawsx.eval_ids["ko"]) == 2000
    scored = {(r["text_a"], r["text_b"]) for r in eval_records(pawsx, data_dir)["en"]}
    assert not scored & {(r["text_a"], r["text_b"]) for r in train_records(pawsx, data_dir)}


def test_selection_rows_are_neither_trained_on_nor_scored(made):
    from xltlib.data.split import select_records

    p = ProtocolConfig(name="zero_shot", selection=True, selection_fraction=0.25, max_eval=30)
    plain = make_split("xnli", ["en", "de"], ProtocolConfig(name="zero_shot", max_eval=30), made)
    xnli = make_split("xnli", ["en", "de"], p, made)
    held, trained = set(xnli.select_rows["xnli_dev_en"]), set(xnli.train_rows["xnli_dev_en"])
    assert held and not held & trained and held | trained == set(plain.train_rows["xnli_dev_en"])
    assert {i // 3 for i in held}.isdisjoint({i // 3 for i in trained})  # whole premise blocks held out
    assert xnli.train_key != plain.train_key and xnli.eval_key == plain.eval_key
    pawsx = make_split("pawsx", ["en", "de"], p, made)  # PAWS-X: its English dev, which is not scored
    assert list(pawsx.select_rows) == ["dev"] and "dev" not in pawsx.train_rows and pawsx.eval_split == "test"
    assert len(select_records(pawsx, made)) == len(pawsx.select_rows["dev"])


def test_selection_for_suite_tasks_holds_out_training_rows_only(made):
    """UD-POS holds out part of its PUD training half, PAN-X / XCOPA / the QA tasks part of their training files;
    the scored rows stay the same as without selection."""
    from xltlib.data.split import select_records

    on = ProtocolConfig(name="zero_shot", selection=True, selection_fraction=0.25)
    for task, langs in [("udpos", ["en", "de"]), ("panx", ["en", "de"]), ("xcopa", ["en", "sw"]),
                        ("xquad", ["en", "de"])]:
        plain, sel = make_split(task, langs, ProtocolConfig(name="zero_shot"), made), make_split(task, langs, on, made)
        (source, held), = sel.select_rows.items()
        trained = set(sel.train_rows[source])
        assert held and trained and not set(held) & trained, task
        assert set(held) | trained == set(plain.train_rows[source]), task
        assert sel.eval_ids == plain.eval_ids and sel.eval_key == plain.eval_key, task
        assert sel.train_key != plain.train_key and len(select_records(sel, made)) == len(held), task
        if task == "udpos":  # PUD: the held-out rows come from the training half, never the scored half
            assert not set(held) & set(sel.eval_ids["en"])
    assert make_split("udpos", ["en"], ProtocolConfig(name="zero_shot"), made).select_rows == {}


def test_checkpoint_selection_keeps_the_best_epoch(made):
    import numpy as np

    from xltlib.data import tasks as T
    from xltlib.training.objectives import build_objective
    from xltlib.evaluation.task_types import get_kind
    from xltlib.training.loop import train_model

    p = ProtocolConfig(name="zero_shot", selection=True, selection_fraction=0.25)
    split = make_split("xnli", ["en"], p, made)
    from xltlib.data.split import select_records

    model, _, log = train_model("tiny-random", train_records(split, made), task_type=get_kind("pair_classification"),
                                task=T.get_task("xnli"), num_labels=3, objective=build_objective("baseline"),
                                seed=0, epochs=3, batch_size=8, lr=1e-3, bf16=False,
                                select_records=select_records(split, made))
    scores = [r["select_score"] for r in log if "select_score" in r]
    assert len(scores) == 3 and {r["selected_epoch"] for r in log} == {int(np.argmax(scores))}
    from xltlib.evaluation.task_types import get_kind
    from xltlib.models.load import load_tokenizer
    from xltlib.training.loop import selection_score
    from xltlib.config.schema import TrainConfig

    # the returned weights are the selected epoch's: they score its selection score again
    again = selection_score(model, load_tokenizer("tiny-random"), get_kind("pair_classification"),
                            T.get_task("xnli"), select_records(split, made), TrainConfig(batch_size=8), bf16=False)
    assert again == max(scores)
