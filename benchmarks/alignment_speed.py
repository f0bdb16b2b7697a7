"""Alignment pipeline speed on mE5-small: embedding extraction and the similarity step, against references.

    XLT_DATA_DIR=../shared/data .venv/bin/python benchmarks/alignment_speed.py [--n 1000] [--repeats 3]

Same model (the offline ``me5-small`` checkpoint) and the same N German + N English Tatoeba sentences:

1. sentences/s of ``encode_layers`` (all 13 layers pooled in one pass), fp32 and bf16 (bf16 weights, the
   library's inference precision: ``xltlib.training.precision.bf16_inference``); ``inference_speed.py`` has the bf16 race;
2. sentences/s of ``sentence_transformers.SentenceTransformer`` (Transformer + mean Pooling, cpu) ``.encode``,
   last layer only: fp32, under bf16 autocast, and with bf16 weights (``model_kwargs`` dtype); a variant
   that fails is skipped with its error;
3. agreement of the last-layer mean-pooled embeddings (per-sentence cosine, fp32 must be > 0.99);
4. the similarity step: ``compute_alignment_pairs`` with the ``retrieval`` metric on one language pair at all
   13 layers vs a bare ``torch.mm`` of the same shapes (13 x [N,d]@[d,N] fp32).

``--probe`` times the language-ID probe instead: ``langid_probe`` (metric version 3: every fold at once, bf16
products, :mod:`xltlib.evaluation.probe`) against version 2's ``StandardScaler`` + ``LogisticRegression``
(scikit-learn, ``cross_val_score``) on the same rows and folds, per layer of the bf16 ``encode_layers`` states of
``--probe-langs`` Tatoeba languages (the xx sides, as the alignment stage feeds it), with both clocks (wall and
this process's CPU seconds, which other jobs on a shared core do not inflate) and the accuracy of each.

Every path is warmed up once on the full input before timing; times are ``time.perf_counter`` wall clock,
each variant is timed ``--repeats`` times (variants interleaved) and the median is reported.
This is a report, not a test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from _quiet import quiet_reports  # benchmarks/_quiet.py (the script folder is on sys.path)
from xltlib.data import tasks as T
from xltlib.core.peak import cpu_peaks, format_peaks
from xltlib.evaluation.alignment import compute_alignment_pairs, encode_layers, langid_probe
from xltlib.models.load import load_encoder, load_tokenizer, resolve_model

quiet_reports()
MODEL = "me5-small"
MAX_LEN = 128


def timed(fn, repeats: int) -> tuple[list[float], object]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` (after the caller's warm-up) and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return times, out


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    have = [x for x in ("avx512_bf16", "amx_bf16") if x in flags]
    return ",".join(have) or "none"


def build_st(path: str, dim: int, model_kwargs: dict | None = None):
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6 moved the modules; the old path still works with a deprecation warning
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer
    kw = {"model_kwargs": model_kwargs} if model_kwargs else {}
    tr = Transformer(path, max_seq_length=MAX_LEN, **kw)
    return SentenceTransformer(modules=[tr, Pooling(dim, pooling_mode="mean")], device="cpu")


def st_encoder(st, sentences: list[str], batch_size: int, autocast: bool):
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = st.encode(sentences, batch_size=batch_size, show_progress_bar=False, convert_to_tensor=True)
        return out.float().cpu().numpy()

    return run


def row_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


PROBE_LANGS = "ar,bg,de,el,es,fr,hi,ja,ko,ru,sw,th,tr,ur,vi,zh"  # the quick run's alignment languages


def sklearn_probe(reps: dict[str, np.ndarray], max_per_lang: int = 200, folds: int = 5, seed: int = 0,
                  C: float = 1.0) -> float:
    """``langid_probe`` of metric version 2, verbatim: the same rows, folds and scikit-learn classifier."""
    rng = np.random.default_rng(seed)
    feats, labels = [], []
    for i, (_, a) in enumerate(sorted(reps.items())):
        sel = rng.choice(len(a), size=min(max_per_lang, len(a)), replace=False)
        feats.append(np.asarray(a, np.float32)[np.sort(sel)])
        labels.append(np.full(len(sel), i))
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(clf, np.concatenate(feats), np.concatenate(labels), cv=cv).mean())


def bench_probe(args, data_dir: str) -> None:
    langs = args.probe_langs.split(",")
    cache = args.probe_cache
    if cache and os.path.exists(cache):
        reps = dict(np.load(cache))
        print(f"encodings read from {cache}")
    else:
        tok, model = load_tokenizer(MODEL), load_encoder(MODEL).eval()
        t = time.perf_counter()
        reps = {lang: encode_layers(model, tok, [r["text_a"] for r in T.load_records("tatoeba", lang, data_dir)]
                                    [: args.probe_n], batch_size=args.batch_size, max_length=MAX_LEN, bf16=True)
                for lang in langs}
        print(f"encoded {len(langs)} x {args.probe_n} sentences in {time.perf_counter() - t:.0f} s")
        if cache:
            np.savez(cache, **reps)
    depth = next(iter(reps.values())).shape[0]
    print(f"language-ID probe: {len(reps)} languages x {min(len(a[0]) for a in reps.values())} sentences "
          f"(200 per language sampled, as the stage does), {depth} layers, 5 folds, C=1")
    print(f"{'layer':>5s} {'v2 sklearn s':>12s} {'cpu s':>6s} {'acc':>7s} {'v3 ours s':>9s} {'cpu s':>6s} {'acc':>7s} "
          f"{'|diff|':>7s} {'x wall':>6s} {'x cpu':>6s}")
    tot = np.zeros(4)
    diffs = []
    for layer in range(depth):
        layer_reps = {lang: a[layer] for lang, a in reps.items()}
        t, c = time.perf_counter(), time.process_time()
        old = sklearn_probe(layer_reps)
        t1, c1 = time.perf_counter(), time.process_time()
        new = langid_probe(layer_reps)["langid_acc"]
        t2, c2 = time.perf_counter(), time.process_time()
        row = np.array([t1 - t, c1 - c, t2 - t1, c2 - c1])
        tot += row
        diffs.append(abs(new - old))
        print(f"{layer:5d} {row[0]:12.3f} {row[1]:6.3f} {old:7.4f} {row[2]:9.3f} {row[3]:6.3f} {new:7.4f} "
              f"{abs(new - old):7.4f} {row[0] / row[2]:6.1f} {row[1] / row[3]:6.1f}")
    print(f"{'all':>5s} {tot[0]:12.2f} {tot[1]:6.2f} {'':7s} {tot[2]:9.2f} {tot[3]:6.2f} {'':7s} {max(diffs):7.4f} "
          f"{tot[0] / tot[2]:6.1f} {tot[1] / tot[3]:6.1f}")
    print(f"per checkpoint (all {depth} layers): v2 {tot[1]:.2f} CPU s, v3 {tot[3]:.2f} CPU s -> {tot[1] / tot[3]:.1f}x; "
          f"largest accuracy difference {max(diffs):.4f} (target <= 0.01)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="sentences per language (German and English)")
    ap.add_argument("--lang", default="de")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per variant (median reported)")
    ap.add_argument("--sim-repeats", type=int, default=5, help="timed runs of the similarity step")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    ap.add_argument("--probe", action="store_true", help="time the language-ID probe (v2 scikit-learn vs v3) only")
    ap.add_argument("--probe-langs", default=PROBE_LANGS, help="--probe: Tatoeba languages, comma-separated")
    ap.add_argument("--probe-n", type=int, default=250, help="--probe: sentences per language encoded")
    ap.add_argument("--probe-cache", default="", help="--probe: .npz to keep the encodings in (read when present)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = os.environ.get("XLT_DATA_DIR")
    if not data_dir:
        raise SystemExit("set XLT_DATA_DIR to the XTREME-layout data folder (e.g. ../shared/data)")
    pk = cpu_peaks()
    print(f"{format_peaks(pk)} (xltlib.core.peak); torch threads {torch.get_num_threads()}")
    if args.probe:
        bench_probe(args, data_dir)
        return

    recs = T.load_records("tatoeba", args.lang, data_dir)[: args.n]
    n = len(recs)
    xs, ys = [r["text_a"] for r in recs], [r["text_b"] for r in recs]
    both = xs + ys
    path = resolve_model(MODEL)
    tok = load_tokenizer(MODEL)
    model = load_encoder(MODEL).eval()
    cfg = model.config
    dim, depth = cfg.hidden_size, cfg.num_hidden_layers + 1
    n_tok = sum(len(t) for t in tok(both, truncation=True, max_length=MAX_LEN)["input_ids"])

    try:
        import threadpoolctl

        blas = ", ".join(sorted({f"{i['internal_api']}={i['num_threads']}" for i in threadpoolctl.threadpool_info()
                                 if i.get("user_api") == "blas"}))
    except Exception:  # noqa: BLE001 - informational only
        blas = "?"
    print(f"device: cpu (this benchmark times the CPU path); torch {torch.__version__}: intra-op threads={torch.get_num_threads()}, "
          f"inter-op={torch.get_num_interop_threads()}; os.cpu_count={os.cpu_count()}; "
          f"cpu bf16 flags: {cpu_flags()}; numpy BLAS threads: {blas}")
    print(f"{MODEL} ({path}): {depth} hidden-state layers x {dim}; Tatoeba {args.lang}-en, "
          f"{n} + {n} sentences, {n_tok / (2 * n):.1f} tokens/sentence (max_length {MAX_LEN}), "
          f"batch {args.batch_size}, median of {args.repeats}")

    # ------------------------------------------------------------------ 1+2. extraction throughput
    # Each variant encodes the German list then the English list (as the alignment stage does).
    def ours(bf16: bool):
        def run():
            kw = dict(pooling="mean", batch_size=args.batch_size, max_length=MAX_LEN, bf16=bf16)
            return np.concatenate([encode_layers(model, tok, xs, **kw), encode_layers(model, tok, ys, **kw)], 1)

        return run

    variants: dict[str, dict] = {
        "ours encode_layers fp32": dict(fn=ours(False), family="ours", prec="fp32", layers=depth),
        "ours encode_layers bf16": dict(fn=ours(True), family="ours", prec="bf16", layers=depth),
    }
    skipped: dict[str, str] = {}
    st_specs = [("ST encode fp32", None, False, "fp32"),
                ("ST encode bf16 autocast", None, True, "bf16"),
                ("ST encode bf16 weights", {"dtype": torch.bfloat16}, False, "bf16w")]
    st_models: dict[str | None, object] = {}
    for name, mkw, autocast, prec in st_specs:
        key = repr(mkw)
        try:
            if key not in st_models:
                try:
                    st_models[key] = build_st(path, dim, mkw)
                except TypeError:  # older transformers spell it torch_dtype
                    if not mkw:
                        raise
                    st_models[key] = build_st(path, dim, {"torch_dtype": mkw["dtype"]})
            st = st_models[key]
            if mkw and next(st.parameters()).dtype != torch.bfloat16:
                raise RuntimeError(f"weights loaded as {next(st.parameters()).dtype}, not bfloat16")
            fn = st_encoder(st, xs, args.batch_size, autocast)
            fn_y = st_encoder(st, ys, args.batch_size, autocast)
            variants[name] = dict(fn=lambda a=fn, b=fn_y: np.concatenate([a(), b()]), family="st", prec=prec, layers=1)
        except Exception as exc:  # noqa: BLE001 - skip gracefully, say why
            skipped[name] = f"{type(exc).__name__}: {exc}"

    for name, v in list(variants.items()):  # warm-up, once each, on the full input
        try:
            v["out"] = v["fn"]()
            v["times"] = []
        except Exception as exc:  # noqa: BLE001
            skipped[name] = f"{type(exc).__name__}: {exc}"
            del variants[name]
    for _ in range(args.repeats):  # interleaved, so slow drift hits every variant alike
        for v in variants.values():
            t, v["out"] = timed(v["fn"], 1)
            v["times"] += t
    for v in variants.values():
        v["sps"] = 2 * n / statistics.median(v["times"])
        v["spread"] = (max(v["times"]) - min(v["times"])) / statistics.median(v["times"])

    # ------------------------------------------------------------------ 3. agreement (last layer, mean pooled)
    ours32 = variants["ours encode_layers fp32"]["out"]
    ref = ours32[-1]
    agree = {}
    for name, v in variants.items():
        if name == "ours encode_layers fp32":
            continue
        last = v["out"][-1] if v["family"] == "ours" else v["out"]
        agree[name] = row_cos(ref, last)

    # ------------------------------------------------------------------ 4. similarity step
    x_by, y_by = {args.lang: ours32[:, :n]}, {args.lang: ours32[:, n:]}
    layers = list(range(depth))

    def sim_ours():
        return compute_alignment_pairs(x_by, y_by, metrics=["retrieval"], layers=layers)

    tx = [torch.from_numpy(np.ascontiguousarray(ours32[i, :n])) for i in layers]
    tyT = [torch.from_numpy(np.ascontiguousarray(ours32[i, n:])).T.contiguous() for i in layers]

    def mm_k(k: int):
        def run():
            for _ in range(k):
                for a, b in zip(tx, tyT):
                    torch.mm(a, b)

        return run

    rows = sim_ours()  # warm-up
    mm_k(1)()
    t_sim, _ = timed(sim_ours, args.sim_repeats)
    t_mm, _ = timed(mm_k(1), args.sim_repeats)
    t_mm6, _ = timed(mm_k(6), args.sim_repeats)
    t_sim, t_mm, t_mm6 = (statistics.median(t) for t in (t_sim, t_mm, t_mm6))
    acc = {r["layer"]: r["value"] for r in rows if r["metric"] == "retrieval.acc1_xx2en"}

    # ------------------------------------------------------------------ report
    st_ref = variants.get("ST encode fp32", {}).get("sps", float("nan"))
    st_bf = max((v["sps"] for k, v in variants.items() if v["family"] == "st" and v["prec"] != "fp32"),
                default=float("nan"))
    print()
    print(f"{'extraction (' + str(2 * n) + ' sentences)':34s} {'layers':>6s} {'sent/s':>8s} {'tok/s':>8s} "
          f"{'spread':>7s} {'x ST fp32':>9s} {'min cos vs ours fp32':>21s}")
    for name, v in variants.items():
        c = agree.get(name)
        cos = "(reference)" if c is None else f"{c.min():.6f}"
        print(f"{name:34s} {v['layers']:6d} {v['sps']:8.1f} {v['sps'] * n_tok / (2 * n):8.0f} "
              f"{v['spread']:6.0%} {v['sps'] / st_ref:9.2f} {cos:>21s}")
    for name, why in skipped.items():
        print(f"{name:34s} skipped: {why[:150]}")
    print()
    o32 = variants["ours encode_layers fp32"]["sps"]
    obf = variants.get("ours encode_layers bf16", {}).get("sps", float("nan"))
    print("ratios (ours / sentence-transformers, sentences/s):")
    print(f"  fp32:                         {o32 / st_ref:6.2f}x   (ours pools all {depth} layers, ST only the last)")
    print(f"  ours bf16 / best ST bf16:     {obf / st_bf:6.2f}x")
    print(f"  ours bf16 / ours fp32:        {obf / o32:6.2f}x")
    c32 = agree.get("ST encode fp32")
    if c32 is not None:
        ok = "PASS" if c32.min() > 0.99 else "FAIL"
        print(f"agreement fp32 last layer (mean pooled), {len(c32)} sentences: min cos {c32.min():.7f}, "
              f"mean {c32.mean():.7f} -> {ok} (> 0.99)")
    print()
    print(f"similarity step, {args.lang}-en, {depth} layers, N={n}, d={dim}, median of {args.sim_repeats}:")
    print(f"  compute_alignment_pairs(retrieval): {t_sim * 1e3:9.1f} ms")
    print(f"  bare torch.mm x {depth} ([N,d]@[d,N] fp32): {t_mm * 1e3:6.1f} ms   ratio {t_sim / t_mm:6.1f}x")
    print(f"  bare torch.mm x {6 * depth} (the 6 N x N products retrieval makes per layer: 2 k-NN + 4 acc@1): "
          f"{t_mm6 * 1e3:.1f} ms   ratio {t_sim / t_mm6:.1f}x")
    print(f"  retrieval acc@1 {args.lang}->en by layer: " + " ".join(f"{acc[i]:.3f}" for i in layers))


if __name__ == "__main__":
    main()
