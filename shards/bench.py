"""Benchmark of the sparse codec (not a test): ``python -m shards.bench [--quick]``.

On teacher-like synthetic scores (``shards.synthetic``) of two sizes, COCO (600 x 1000 input,
113,193 anchors x 80 classes) and the embedded default (144 x 192 input, 5,247 anchors x 8
classes), it measures on one core (OMP/MKL/OpenBLAS/numba threads = 1; the module re-runs
itself with those settings):

* encode throughput in views/s — the writer's work per view: the one-pass encoder with the
  exact normaliser, and packing to the stored form — against a dense fp32 copy of the same
  view timed in the same process (ratio: encode time / copy time);
* decode throughput (unpack + decode), into a reused output buffer and into a fresh one,
  against the same copy (memory-speed floor of any decoder) and converting a dense fp16 view
  to fp32 (what a dense cache would cost to read);
* bytes per view: the stored payload, and as stored in a shard (its share of one
  ``scores.npy`` member per image of two views: tar header, npy header, padding), against
  dense fp16 and fp32; kept fraction per level;
* the codec's effect on the adaptive distillation loss: relative ADL error and gradient
  cosine for an untrained (prior 0.01) and a trained (teacher logits + noise) student.

Targets: encode <= 10x a dense fp32 copy; stored <= 1.1x the payload; decode >= 200
COCO-size views/s per core.
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
ENCODE_TARGET = 10.0  # encode time / dense fp32 copy time
STORED_TARGET = 1.1  # stored bytes / payload bytes
VIEWS_PER_SAMPLE = 2  # orig + hflip share one scores member
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

    from shards import SparseCodec, kept_fraction_per_level
    from shards.codec import pack_payload, unpack_payload
    from shards.quality import codec_error, reference_students
    from shards.synthetic import teacher_like_scores

    codec = SparseCodec()
    print(f"shards.bench: codec {codec.params}, one core ({', '.join(THREAD_VARS)} = 1)")
    rows = []
    for name, (level_sizes, classes, views) in SIZES.items():
        views = max(2, views // 3) if args.quick else views
        dense = [teacher_like_scores(sum(level_sizes), classes, level_sizes=level_sizes,
                                     rng=np.random.default_rng(seed)) for seed in range(views)]
        codec.encode_view(dense[0], level_sizes)  # compile (or load the numba cache) first
        rows.append(_measure(name, codec, dense, level_sizes, args.repeats, np,
                             (pack_payload, unpack_payload), kept_fraction_per_level, codec_error,
                             reference_students))
    _print_table(rows)
    coco = rows[0]
    print()
    _verdict(f"decode >= {DECODE_TARGET:.0f} COCO views/s/core", coco["decode_vps"] >= DECODE_TARGET,
             f"{coco['decode_vps']:.0f} views/s with a reused buffer, "
             f"{coco['decode_new_vps']:.0f} with a fresh one")
    ratio = coco["copy_vps"] / coco["encode_vps"]
    _verdict(f"encode <= {ENCODE_TARGET:.0f}x a dense fp32 copy (COCO)", ratio <= ENCODE_TARGET,
             f"{ratio:.1f}x, {coco['encode_vps']:.1f} views/s")
    for r in rows:
        ratio = r["stored"] / r["payload"]
        _verdict(f"stored <= {STORED_TARGET}x payload ({r['name']})", ratio <= STORED_TARGET,
                 f"{ratio:.3f}x")
    return 0


def _verdict(what, met, figures):
    print(f"target {what}: {'met' if met else 'NOT met'} ({figures})")


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


def _measure(name, codec, dense, level_sizes, repeats, np, packing, kept_fraction,
             codec_error, reference_students):
    pack, unpack = packing
    enc, dec, dec_new, copy, fp16 = [], [], [], [], []
    payloads, stored, errors = [], [], {"untrained": [], "trained": []}
    out = np.empty_like(dense[0])
    for i, probs in enumerate(dense):
        half = probs.astype(np.float16)
        enc.append(_best_time(lambda: pack(codec.encode_view(probs, level_sizes)[0]),
                              max(1, repeats // 2)))
        payload = codec.encode(probs, level_sizes)
        payloads.append(payload)
        stored.append(pack(payload))
        dec.append(_best_time(lambda: codec.decode(unpack(stored[-1]), out=out), repeats))
        dec_new.append(_best_time(lambda: codec.decode(unpack(stored[-1])), repeats))
        copy.append(_best_time(lambda: np.copyto(out, probs), repeats))
        fp16.append(_best_time(lambda: half.astype(np.float32), repeats))
        decoded = codec.decode(payload)
        for student, logits in reference_students(probs, np.random.default_rng(100 + i)).items():
            errors[student].append(codec_error(probs, decoded, logits))
    size = dense[0].size
    payload_bytes = statistics.mean(len(b) for b in stored)
    kept = np.mean([kept_fraction(p) for p in payloads], axis=0)
    return {
        "name": name, "shape": dense[0].shape, "views": len(dense),
        "encode_vps": 1 / statistics.mean(enc), "decode_vps": 1 / statistics.mean(dec),
        "decode_new_vps": 1 / statistics.mean(dec_new), "copy_vps": 1 / statistics.mean(copy),
        "fp16_vps": 1 / statistics.mean(fp16),
        "payload": payload_bytes, "stored": _stored_bytes(stored), "fp16": size * 2,
        "fp32": size * 4, "kept": kept,
        "errors": {s: (max(abs(e) for e, _ in v), min(c for _, c in v)) for s, v in errors.items()},
    }


def _stored_bytes(stored):
    """Mean bytes per view inside a shard: views in pairs (one image) share one scores.npy
    member — its 512-byte tar header, its npy header and the padding to 512-byte blocks."""
    from shards.sample import scores_member_bytes

    pairs = [stored[i:i + VIEWS_PER_SAMPLE] for i in range(0, len(stored), VIEWS_PER_SAMPLE)]
    return sum(scores_member_bytes([len(b) for b in pair]) for pair in pairs) / len(stored)


def _shape(row):
    return f"{row['shape'][0]:,} x {row['shape'][1]}"


def _print_table(rows):
    print("\nthroughput, views/s on one core (mean over views)")
    print(f"{'size':<10}{'HWA x C':>16}{'encode':>10}{'decode':>10}{'decode*':>10}"
          f"{'fp32 copy':>11}{'fp16->32':>10}{'enc time/copy':>15}{'dec/copy':>10}{'dec/fp16':>10}")
    for r in rows:
        print(f"{r['name']:<10}{_shape(r):>16}"
              f"{r['encode_vps']:>10.1f}{r['decode_vps']:>10.0f}{r['decode_new_vps']:>10.0f}"
              f"{r['copy_vps']:>11.0f}{r['fp16_vps']:>10.0f}"
              f"{r['copy_vps'] / r['encode_vps']:>14.1f}x"
              f"{r['decode_vps'] / r['copy_vps']:>10.2f}{r['decode_vps'] / r['fp16_vps']:>10.2f}")
    print("  encode: one-pass encode + normaliser + packing; decode: unpack + decode into a reused")
    print("  buffer; decode*: into a fresh array; enc time/copy: encode time / fp32 copy time")
    print("\nbytes per view (mean over views): stored payload, and as stored in a tar")
    print(f"{'size':<10}{'payload':>10}{'in tar':>10}{'tar/payload':>12}{'dense fp16':>12}"
          f"{'x fp16':>8}{'x fp32':>8}{'tar x fp16':>12}   kept fraction per level")
    for r in rows:
        kept = " ".join(f"{100 * k:.3f}%" for k in r["kept"])
        print(f"{r['name']:<10}{r['payload']:>10,.0f}{r['stored']:>10,.0f}"
              f"{r['stored'] / r['payload']:>12.3f}{r['fp16']:>12,}"
              f"{r['fp16'] / r['payload']:>8.1f}{r['fp32'] / r['payload']:>8.1f}"
              f"{r['fp16'] / r['stored']:>12.1f}   {kept}")
    print("\nADL of decoded vs dense scores (worst over views; criteria |error| <= 0.5%, "
          "cosine >= 0.999)")
    print(f"{'size':<10}{'student':<11}{'|ADL error|':>13}{'grad cosine':>13}")
    for r in rows:
        for student, (error, cosine) in r["errors"].items():
            print(f"{r['name']:<10}{student:<11}{100 * error:>12.3f}%{cosine:>13.6f}")


if __name__ == "__main__":
    sys.exit(main())
