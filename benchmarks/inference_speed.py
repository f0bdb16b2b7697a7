"""Inference speed of the two stages that score full test sets, against sentence-transformers on the same model.

    XLT_DATA_DIR=../shared/data .venv/bin/python benchmarks/inference_speed.py [--n 500] [--pairs 500] \
        [--repeats 5] [--device auto] [--pooling mean]

The report starts with the device and its bf16 matmul peak (best of several timed trials of a square bf16
matmul after a warm-up, 2048^2 on a CPU, 8192^2 on a GPU), then:

(a) alignment stage: sentences/s of ``encode_layers`` (all 13 hidden-state layers of the offline ``me5-small``
    mean-pooled in one pass, bf16, called once per language as the stage does) on N German + N English Tatoeba
    sentences, against ``SentenceTransformer([Transformer, Pooling(mean)]).encode`` (last layer only) at its
    best bf16 setting: bf16 autocast and bf16 weights are both timed, the faster is the reference.
    Agreement: per-sentence cosine of the last-layer embeddings with the reference and with ours in fp32.
(b) transfer stage: pairs/s of the pair-classification prediction, the stage's own code path
    (``get_kind("pair_classification").evaluate(model, tokenizer, task, recs, objective=baseline, bf16=True)``
    on a checkpoint written by ``save_checkpoint`` and read by ``load_checkpoint``) on the first P XNLI test
    pairs of each of ``--langs``, against ``sentence_transformers.CrossEncoder`` on the same classifier, again
    at its best bf16 setting. The default ``mean``-pooling head (``MeanPoolClassifier``) is not a Hugging Face
    class, so its CrossEncoder is built from modules: the encoder saved with ``save_pretrained``, mean
    ``Pooling`` and a ``Dense`` layer holding the head's weights (identity activation) that writes ``scores``;
    ``--pooling cls`` saves the ``AutoModelForSequenceClassification`` head and loads it with ``CrossEncoder(path)``.
    Agreement: share of pairs whose argmax equals the reference's, and ours in fp32 (target >= 99%).
    The head is fitted by logistic regression on frozen mean-pooled features of English XNLI dev pairs: speed
    does not depend on it, but a random head predicts nearly one class for every pair (E5 states are
    anisotropic), which would make any agreement look perfect.

Every variant is warmed up once on the full input (ours casts its bf16 weight copy there; that one-time cost is
printed separately), then timed ``--repeats`` times, variants interleaved, median reported (ratios also of the
best times: noise on a shared host only ever slows a run down); ``spread`` is (max - min) / median. Same batch
size and max_length everywhere. This is a report, not a test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from _quiet import quiet_reports  # benchmarks/_quiet.py (the script folder is on sys.path)
from xltlib.data import tasks as T
from xltlib.evaluation.alignment import encode_layers
from xltlib.training.batching import collate, tokenize_pairs
from xltlib.core.devices import describe, resolve_device
from xltlib.core.peak import cpu_peaks, format_peaks, matmul_peak
from xltlib.evaluation.predict import classify
from xltlib.models.heads import load_classifier
from xltlib.evaluation.task_types import get_kind
from xltlib.models.load import load_encoder, load_tokenizer, resolve_model
from xltlib.training.objectives import build_objective
from xltlib.evaluation.task_types import load_checkpoint
from xltlib.training.checkpoints import save_checkpoint
from xltlib.training.loop import trainable_parameters

quiet_reports()
MODEL = "me5-small"
MAX_LEN = 128
BF16 = torch.bfloat16


CLOCK = time.perf_counter  # --clock cpu: time.process_time (one thread: immune to other jobs on the core)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ForwardClock:
    """Time spent inside the forward passes of the Hugging Face encoder(s) in ``owner`` (hooks), and the tokens
    they ran on (padding included): what is left of a variant's time is its own overhead around the model."""

    def __init__(self, owner: torch.nn.Module):
        self.encoders = [m for m in owner.modules() if isinstance(m, transformers.PreTrainedModel)
                         and getattr(m, "base_model", None) is m]
        self.seconds, self.tokens, self._t = 0.0, 0, 0.0

    def __enter__(self) -> "ForwardClock":
        # the instance's forward is wrapped, not hooked: sentence-transformers calls model.forward directly
        def wrap(forward):
            def timed_forward(*args, **kwargs):
                ids = kwargs.get("input_ids", args[0] if args else None)
                self.tokens += ids.numel() if ids is not None else 0
                t = CLOCK()
                try:
                    return forward(*args, **kwargs)
                finally:
                    self.seconds += CLOCK() - t

            return timed_forward

        for m in self.encoders:
            m.forward = wrap(m.forward)
        return self

    def __exit__(self, *exc) -> None:
        for m in self.encoders:
            del m.forward  # the class's forward again


def forward_share(name: str, fn, owner: torch.nn.Module, device: torch.device) -> dict:
    """One extra call of ``fn`` with the encoder's forward timed: total, forward and overhead seconds, tokens."""
    with ForwardClock(owner) as fc:
        t = CLOCK()
        fn()
        sync(device)
        total = CLOCK() - t
    print(f"  {name:42s} total {total:6.2f}s  encoder forward {fc.seconds:6.2f}s ({fc.seconds / total:4.0%})  "
          f"overhead {total - fc.seconds:5.2f}s  padded tokens {fc.tokens:,}")
    return dict(total=total, forward=fc.seconds, tokens=fc.tokens)


def physics_bound(shares: dict[str, dict], ours: str, ref: str) -> None:
    """How fast ours could be against ``ref`` if everything but its encoder forward were free."""
    o, r = shares[ours], shares[ref]
    print(f"  bound: {ref} total / ours' encoder forward alone = {r['total'] / o['forward']:.2f}x "
          f"(ours' forward runs {o['tokens'] / max(r['tokens'], 1):.2f}x the reference's padded tokens)")


def run_variants(variants: dict[str, dict], repeats: int, device: torch.device) -> None:
    """Warm up each variant once (its one-time costs go to ``first_s``), then time them interleaved."""
    for v in variants.values():
        t = CLOCK()
        v["out"] = v["fn"]()
        sync(device)
        v["first_s"], v["times"] = CLOCK() - t, []
    for _ in range(repeats):  # interleaved, so slow drift of a shared host hits every variant alike
        for v in variants.values():
            t = CLOCK()
            v["out"] = v["fn"]()
            sync(device)
            v["times"].append(CLOCK() - t)
    for v in variants.values():
        med = statistics.median(v["times"])
        v["med"], v["best"], v["spread"] = med, min(v["times"]), (max(v["times"]) - min(v["times"])) / med


def row_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def st_modules():
    try:  # sentence-transformers >= 6 moved the modules; the old path still works with a deprecation warning
        from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Dense, Pooling, Transformer
    return Transformer, Pooling, Dense


def table(title: str, unit: str, n_items: int, variants: dict[str, dict], ref: str, agree: dict[str, str]) -> None:
    print(f"{title:44s} {unit + '/s':>9s} {'spread':>7s} {'first call':>10s} {'x ' + ref[:22]:>24s}  agreement")
    ref_rate = n_items / variants[ref]["med"]
    for name, v in variants.items():
        rate = n_items / v["med"]
        print(f"{name:44s} {rate:9.1f} {v['spread']:6.0%} {v['first_s']:9.2f}s {rate / ref_rate:24.2f}  "
              f"{agree.get(name, '')}")


def report_ratio(variants: dict[str, dict], ref: str, unit: str) -> tuple[float, float]:
    """ours (the first variant) / ``ref`` in items/s: of the median times and of the best times."""
    ours = variants[next(iter(variants))]
    med, best = variants[ref]["med"] / ours["med"], variants[ref]["best"] / ours["best"]
    print(f"ours / {ref}: {med:.2f}x {unit} (median times; best times: {best:.2f}x)")
    return med, best


# ---------------------------------------------------------------------------------------------- (a)
def bench_encode(args, device, tok, path: str) -> float:
    Transformer, Pooling, _ = st_modules()
    from sentence_transformers import SentenceTransformer

    recs = T.load_records("tatoeba", args.lang, args.data_dir)[: args.n]
    n = len(recs)
    xs, ys = [r["text_a"] for r in recs], [r["text_b"] for r in recs]
    model = load_encoder(MODEL).to(device).eval()
    dim, depth = model.config.hidden_size, model.config.num_hidden_layers + 1
    n_tok = sum(len(t) for t in tok(xs + ys, truncation=True, max_length=MAX_LEN)["input_ids"])
    print(f"\n(a) alignment stage: Tatoeba {args.lang}-en, {n} + {n} sentences, {n_tok / (2 * n):.1f} tokens/sentence, "
          f"batch {args.batch_size}, max_length {MAX_LEN}, median of {args.repeats}")

    def ours(bf16: bool):
        kw = dict(pooling="mean", batch_size=args.batch_size, max_length=MAX_LEN, bf16=bf16)
        return lambda: np.concatenate([encode_layers(model, tok, xs, **kw), encode_layers(model, tok, ys, **kw)], 1)

    def st(bf16_weights: bool):
        kw = {"model_kwargs": {"dtype": BF16}} if bf16_weights else {}
        m = SentenceTransformer(modules=[Transformer(path, max_seq_length=MAX_LEN, **kw), Pooling(dim, pooling_mode="mean")],
                                device=str(device))
        assert next(m.parameters()).dtype == (BF16 if bf16_weights else torch.float32)

        def run():
            with torch.autocast(device.type, dtype=BF16, enabled=not bf16_weights):
                out = [m.encode(s, batch_size=args.batch_size, show_progress_bar=False, convert_to_tensor=True)
                       for s in (xs, ys)]
            return torch.cat(out).float().cpu().numpy()

        run.owner = m  # the module whose encoder forward ForwardClock times
        return run

    variants = {f"ours encode_layers bf16 ({depth} layers)": dict(fn=ours(True), owner=model),
                "ST encode bf16 autocast (last layer)": dict(fn=st(False)),
                "ST encode bf16 weights (last layer)": dict(fn=st(True))}
    run_variants(variants, args.repeats, device)
    fp32 = ours(False)()[-1]  # untimed: the accuracy reference
    st_names = [k for k in variants if k.startswith("ST")]
    best = min(st_names, key=lambda k: variants[k]["med"])
    ref_out = variants[best]["out"]
    agree = {}
    for name, v in variants.items():
        last = v["out"][-1] if v["out"].ndim == 3 else v["out"]
        c_ref, c32 = row_cos(last, ref_out), row_cos(last, fp32)
        agree[name] = f"min cos vs best ST {c_ref.min():.5f}, vs ours fp32 {c32.min():.5f}"
    table(f"extraction ({2 * n} sentences)", "sent", 2 * n, variants, best, agree)
    print("where the time goes (one more call each):")
    shares = {name: forward_share(name, v["fn"], v.get("owner") or v["fn"].owner, device)
              for name, v in variants.items()}
    physics_bound(shares, next(iter(variants)), best)
    return report_ratio(variants, best, "sentences/s")


# ---------------------------------------------------------------------------------------------- (b)
def fit_head(model, tok, records: list[dict], device, batch_size: int) -> None:
    """Logistic regression on frozen features -> the classifier's weights (mean pooling: the head's own input;
    cls pooling: the pooler output)."""
    from sklearn.linear_model import LogisticRegression

    ids = tokenize_pairs(tok, [r["text_a"] for r in records], [r["text_b"] for r in records], MAX_LEN)
    feats = []
    with torch.inference_mode():
        for s in range(0, len(ids), batch_size):
            batch = {k: v.to(device) for k, v in collate(ids[s:s + batch_size], tok.pad_token_id).items()}
            if hasattr(model, "encoder") and hasattr(model, "_mean_pool"):  # MeanPoolClassifier
                h = model.encoder(**batch).last_hidden_state
                feats.append(model._mean_pool(h, batch["attention_mask"]).float().cpu().numpy())
            else:  # HF *ForSequenceClassification: the classifier reads the pooler output
                feats.append(model.base_model(**batch).pooler_output.float().cpu().numpy())
    clf = LogisticRegression(C=10.0, max_iter=2000).fit(np.concatenate(feats), [r["label"] for r in records])
    layer = model.classifier if isinstance(model.classifier, torch.nn.Linear) else model.classifier.out_proj
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(clf.coef_, dtype=layer.weight.dtype))
        layer.bias.copy_(torch.as_tensor(clf.intercept_, dtype=layer.bias.dtype))


def cross_encoder(model, tok, folder: Path, pooling: str, device, bf16_weights: bool):
    """A CrossEncoder computing the same function as ``model`` (a loaded checkpoint), bf16 weights or fp32."""
    from sentence_transformers import CrossEncoder

    kw = {"model_kwargs": {"dtype": BF16}} if bf16_weights else {}
    if pooling == "cls":
        if not (folder / "config.json").exists():
            model.save_pretrained(folder)
            tok.save_pretrained(folder)
        ce = CrossEncoder(str(folder), device=str(device), max_length=MAX_LEN, **kw)
    else:
        Transformer, Pooling, Dense = st_modules()
        if not (folder / "config.json").exists():
            model.encoder.save_pretrained(folder)
            tok.save_pretrained(folder)
        dim, w = model.config.hidden_size, model.classifier
        dense = Dense(dim, w.out_features, activation_function=None, module_output_name="scores",
                      init_weight=w.weight.detach().clone().cpu(), init_bias=w.bias.detach().clone().cpu())
        ce = CrossEncoder(modules=[Transformer(str(folder), max_seq_length=MAX_LEN, **kw),
                                   Pooling(dim, pooling_mode="mean"), dense], device=str(device))
        if bf16_weights:
            ce.to(BF16)  # the Dense layer too (its input is the bf16 pooled state)
    assert ce.num_labels == model.config.num_labels
    want = BF16 if bf16_weights else torch.float32
    assert all(p.dtype == want for p in ce.parameters()), {p.dtype for p in ce.parameters()}
    return ce.eval()


def bench_predict(args, device, tok) -> float:
    langs = args.langs.split(",")
    recs = {lang: T.load_records("xnli", lang, args.data_dir, "test")[: args.pairs] for lang in langs}
    texts = [(r["text_a"], r["text_b"]) for lang in langs for r in recs[lang]]
    n = len(texts)
    n_tok = sum(len(x) for x in tokenize_pairs(tok, [a for a, _ in texts], [b for _, b in texts], MAX_LEN))
    train = T.load_records("xnli", "en", args.data_dir, "dev")[: args.head_pairs]
    print(f"\n(b) transfer stage: XNLI test, {args.pairs} pairs x {'+'.join(langs)} = {n} pairs, "
          f"{n_tok / n:.1f} tokens/pair, batch {args.batch_size}, max_length {MAX_LEN}, head pooling "
          f"{args.pooling!r} fitted on {len(train)} English dev pairs, median of {args.repeats}")

    with tempfile.TemporaryDirectory() as tmp:
        # a checkpoint the way the train stage writes it (frozen word embeddings are not saved) and the stage reads it
        head = load_classifier(MODEL, 3, args.pooling).to(device).eval()
        fit_head(head, tok, train, device, args.batch_size)
        trainable_parameters(head, True)
        save_checkpoint(head.cpu(), tok, Path(tmp, "ckpt"), base_model=MODEL,
                        meta={"kind": "pair_classification", "pooling": args.pooling})
        del head
        model, tok, _ = load_checkpoint(Path(tmp, "ckpt"))
        model = model.to(device).eval()
        kind, task = get_kind("pair_classification"), T.get_task("xnli")
        objective = build_objective("baseline", {}, data_dir=args.data_dir, entry="baseline")
        kw = dict(objective=objective, batch_size=args.batch_size, max_length=MAX_LEN)

        def ours():
            rows = kind.evaluate(model, tok, task, recs, bf16=True, **kw)
            assert len(rows) == 2 * len(langs)
            return rows

        def ce_run(ce, autocast: bool):
            def run():
                with torch.autocast(device.type, dtype=BF16, enabled=autocast):
                    s = ce.predict(texts, batch_size=args.batch_size, show_progress_bar=False, convert_to_tensor=True)
                return s.float().cpu().numpy()

            run.owner = ce  # the module whose encoder forward ForwardClock times
            return run

        folder = Path(tmp, "hf")
        ce32, ce16 = (cross_encoder(model, tok, folder, args.pooling, device, bf) for bf in (False, True))
        variants = {"ours kind.evaluate bf16 (the stage's path)": dict(fn=ours, owner=model),
                    "CrossEncoder.predict bf16 autocast": dict(fn=ce_run(ce32, True)),
                    "CrossEncoder.predict bf16 weights": dict(fn=ce_run(ce16, False))}
        run_variants(variants, args.repeats, device)

        def preds(bf16: bool) -> np.ndarray:  # evaluate_languages' own prediction call, per language
            return np.concatenate([classify(model, tok, [r["text_a"] for r in recs[lang]],
                                            [r["text_b"] for r in recs[lang]], bf16=bf16, **kw)[0] for lang in langs])

        ours_bf, ours32 = preds(True), preds(False)
        ce_names = [k for k in variants if k.startswith("CrossEncoder")]
        best = min(ce_names, key=lambda k: variants[k]["med"])
        ref = variants[best]["out"].argmax(1)
        agree = {name: (ours_bf if name.startswith("ours") else v["out"].argmax(1)) for name, v in variants.items()}
        agree = {name: f"argmax = best CE {np.mean(p == ref):.2%}, = ours fp32 {np.mean(p == ours32):.2%}"
                 for name, p in agree.items()}
        gold = np.array([r["label"] for lang in langs for r in recs[lang]])
        table(f"pair classification ({n} pairs)", "pair", n, variants, best, agree)
        print("where the time goes (one more call each):")
        shares = {name: forward_share(name, v["fn"], v.get("owner") or v["fn"].owner, device)
                  for name, v in variants.items()}
        physics_bound(shares, next(iter(variants)), best)
        print(f"accuracy (fitted head): ours bf16 {np.mean(ours_bf == gold):.3f}, ours fp32 {np.mean(ours32 == gold):.3f}")
        return report_ratio(variants, best, "pairs/s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500, help="(a) Tatoeba sentences per language (German and English)")
    ap.add_argument("--lang", default="de", help="(a) Tatoeba language")
    ap.add_argument("--pairs", type=int, default=500, help="(b) XNLI test pairs per language")
    ap.add_argument("--langs", default="en,de", help="(b) XNLI languages, comma-separated")
    ap.add_argument("--head-pairs", type=int, default=1000, help="(b) English dev pairs the head is fitted on")
    ap.add_argument("--pooling", default="mean", choices=["mean", "cls"], help="(b) classification head pooling")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per variant (median reported)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--only", choices=["a", "b"], default=None, help="run one part only")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: time.process_time, this "
                    "process's CPU seconds (with --threads 1: the ratio other jobs on a shared core do not move)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        global CLOCK
        CLOCK = time.process_time
    args.data_dir = os.environ.get("XLT_DATA_DIR")
    if not args.data_dir:
        raise SystemExit("set XLT_DATA_DIR to the XTREME-layout data folder (e.g. ../shared/data)")
    device = resolve_device(args.device)
    path = resolve_model(MODEL)
    tok = load_tokenizer(MODEL)
    import sentence_transformers

    print(f"device: {describe(device)}; torch {torch.__version__}, transformers {transformers.__version__}, "
          f"sentence-transformers {sentence_transformers.__version__}; clock: {args.clock}")
    if device.type == "cuda":
        print(f"bf16 8192^2 matmul peak (xltlib.core.peak): {matmul_peak(device) / 1e12:.2f} TFLOP/s")
    else:
        pk = cpu_peaks()
        print(f"{format_peaks(pk)} (xltlib.core.peak); this run uses {torch.get_num_threads()} thread(s)")
    ratios = {}
    if args.only in (None, "a"):
        ratios["(a) encode_layers / best ST encode"] = bench_encode(args, device, tok, path)
    if args.only in (None, "b"):
        ratios["(b) pair prediction / best CrossEncoder"] = bench_predict(args, device, tok)
    print("\nsummary (ours / best sentence-transformers bf16, items/s; target >= 1.00x):")
    for k, (med, best) in ratios.items():
        print(f"  {k:42s} {med:5.2f}x median, {best:5.2f}x best of {args.repeats}")


if __name__ == "__main__":
    main()
