"""Benchmark of the sparse codec (not a test): ``python -m shards.bench [--quick]``.

On teacher-like synthetic scores (``shards.synthetic``) of two sizes, COCO (600 x 1000 input,
113,193 anchors x 80 classes) and the embedded default (144 x 192 input, 5,247 anchors x 8
classes), it measures on one core (OMP/MKL/OpenBLAS/numba threads = 1; the module re-runs
itself with those settings):

* encode and decode throughput in views/s, decode with a reused output buffer and with a
  fresh one, against baselines timed in the same process: copying a dense fp32 view
  (memory-speed floor of any decoder) and converting a dense fp16 view to fp32 (what a
  dense cache would cost to read);
* bytes per view of the payload against dense fp16 and fp32, kept fraction per level;
* the codec's effect on the adaptive distillation loss: relative ADL error and gradient
  cosine for an untrained (prior 0.01) and a trained (teacher logits + noise) student.

Target: decode >= 200 COCO-size views/s per core.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "NUMBA_NUM_THREADS")
CHILD_FLAG = "SHARDS_BENCH_ONE_CORE"
DECODE_TARGET = 200.0  # COCO-size views/s per core
SIZES = {  # name: (level sizes, classes, views)
    "coco": ([84375, 21546, 5472, 1440, 360], 80, 6),
    "embedded": ([3888, 972, 270, 81, 36], 8, 40),
}


def main(argv=None):
    args = _parse(argv)
    if os.environ.get(CHILD_FLAG) != "1":  # numpy reads the thread settings at import
        env = dict(os.environ, **{v: "1" for v in THREAD_VARS}, **{CHILD_FLAG: "1"})
        return subprocess.call([sys.executable, "-m", "shards.bench", *(argv or sys.argv[1:])],
                               env=env)
    import numpy as np

    from shards import SparseCodec, kept_fraction_per_level, payload_nbytes
    from shards.quality import codec_error, reference_students
    from shards.synthetic import teacher_like_scores

    codec = SparseCodec()
    print(f"shards.bench: codec {codec.params}, one core ({', '.join(THREAD_VARS)} = 1)")
    rows = []
    for name, (level_sizes, classes, views) in SIZES.items():
        views = max(2, views // 3) if args.quick else views
        dense = [teacher_like_scores(sum(level_sizes), classes, level_sizes=level_sizes,
                                     rng=np.random.default_rng(seed)) for seed in range(views)]
        rows.append(_measure(name, codec, dense, level_sizes, args.repeats, np,
                             payload_nbytes, kept_fraction_per_level, codec_error,
                             reference_students))
    _print_table(rows)
    coco = rows[0]
    verdict = "met" if coco["decode_vps"] >= DECODE_TARGET else "NOT met"
    print(f"\ntarget decode >= {DECODE_TARGET:.0f} COCO views/s/core: {verdict} "
          f"({coco['decode_vps']:.0f} views/s with a reused buffer, "
          f"{coco['decode_new_vps']:.0f} with a fresh one)")
    return 0


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m shards.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats per view")
    parser.add_argument("--quick", action="store_true", help="fewer views (a smoke run)")
    return parser.parse_args(argv)


def _best_time(fn, repeats):
    """Median of ``repeats`` timings (the core may be shared with other work)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _measure(name, codec, dense, level_sizes, repeats, np, payload_nbytes, kept_fraction,
             codec_error, reference_students):
    enc, dec, dec_new, copy, fp16 = [], [], [], [], []
    payloads, errors = [], {"untrained": [], "trained": []}
    out = np.empty_like(dense[0])
    for i, probs in enumerate(dense):
        half = probs.astype(np.float16)
        enc.append(_best_time(lambda: codec.encode(probs, level_sizes), max(1, repeats // 2)))
        payload = codec.encode(probs, level_sizes)
        payloads.append(payload)
        dec.append(_best_time(lambda: codec.decode(payload, out=out), repeats))
        dec_new.append(_best_time(lambda: codec.decode(payload), repeats))
        copy.append(_best_time(lambda: np.copyto(out, probs), repeats))
        fp16.append(_best_time(lambda: half.astype(np.float32), repeats))
        decoded = codec.decode(payload)
        for student, logits in reference_students(probs, np.random.default_rng(100 + i)).items():
            errors[student].append(codec_error(probs, decoded, logits))
    size = dense[0].size
    payload_bytes = statistics.mean(payload_nbytes(p) for p in payloads)
    stored_bytes = statistics.mean(_stored_bytes(p) for p in payloads)
    kept = np.mean([kept_fraction(p) for p in payloads], axis=0)
    return {
        "name": name, "shape": dense[0].shape, "views": len(dense),
        "encode_vps": 1 / statistics.mean(enc), "decode_vps": 1 / statistics.mean(dec),
        "decode_new_vps": 1 / statistics.mean(dec_new), "copy_vps": 1 / statistics.mean(copy),
        "fp16_vps": 1 / statistics.mean(fp16),
        "payload": payload_bytes, "stored": stored_bytes, "fp16": size * 2, "fp32": size * 4, "kept": kept,
        "errors": {s: (max(abs(e) for e, _ in v), min(c for _, c in v)) for s, v in errors.items()},
    }


def _stored_bytes(payload):
    """Bytes the payload takes inside a shard: one .npy member per array, each with its npy
    header and a 512-byte tar header, padded to 512-byte tar blocks."""
    from shards.sample import npy_bytes

    return sum(512 + -(-len(npy_bytes(a)) // 512) * 512 for a in payload.values())


def _shape(row):
    return f"{row['shape'][0]:,} x {row['shape'][1]}"


def _print_table(rows):
    print("\nthroughput, views/s on one core (mean over views; ratio = decode / baseline)")
    print(f"{'size':<10}{'HWA x C':>16}{'encode':>10}{'decode':>10}{'decode*':>10}"
          f"{'fp32 copy':>11}{'fp16->32':>10}{'dec/copy':>10}{'dec/fp16':>10}")
    for r in rows:
        print(f"{r['name']:<10}{_shape(r):>16}"
              f"{r['encode_vps']:>10.1f}{r['decode_vps']:>10.0f}{r['decode_new_vps']:>10.0f}"
              f"{r['copy_vps']:>11.0f}{r['fp16_vps']:>10.0f}"
              f"{r['decode_vps'] / r['copy_vps']:>10.2f}{r['decode_vps'] / r['fp16_vps']:>10.2f}")
    print("  decode: into a reused buffer; decode*: into a fresh array")
    print("\nbytes per view (mean over views): payload arrays, and as stored in a tar")
    print(f"{'size':<10}{'payload':>10}{'in tar':>10}{'dense fp16':>12}{'dense fp32':>12}"
          f"{'x fp16':>8}{'x fp32':>8}{'tar x fp16':>12}   kept fraction per level")
    for r in rows:
        kept = " ".join(f"{100 * k:.3f}%" for k in r["kept"])
        print(f"{r['name']:<10}{r['payload']:>10,.0f}{r['stored']:>10,.0f}{r['fp16']:>12,}"
              f"{r['fp32']:>12,}{r['fp16'] / r['payload']:>8.1f}{r['fp32'] / r['payload']:>8.1f}"
              f"{r['fp16'] / r['stored']:>12.1f}   {kept}")
    print("\nADL of decoded vs dense scores (worst over views; criteria |error| <= 0.5%, "
          "cosine >= 0.999)")
    print(f"{'size':<10}{'student':<11}{'|ADL error|':>13}{'grad cosine':>13}")
    for r in rows:
        for student, (error, cosine) in r["errors"].items():
            print(f"{r['name']:<10}{student:<11}{100 * error:>12.3f}%{cosine:>13.6f}")


if __name__ == "__main__":
    sys.exit(main())
