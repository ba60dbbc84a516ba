"""rnntrace against PyTorch, Keras and a numpy loop, on the same case, in one run.

    pip install tensorflow-cpu==2.21.0 torch numpy
    cargo build --release    # and GNU time at /usr/bin/time (peak memory)
    python examples/bench_vs_peers.py [--batch 512 --steps 100 --features 32 --units 128] [--repeats 7]

For LSTM and GRU it builds one Keras layer with random weights, writes its weights (.npz) and a random input,
then times (median of --repeats warm runs, 2 threads everywhere):
  - PyTorch nn.LSTM / nn.GRU forward (no_grad), same weights converted, records nothing;
  - Keras model.predict (TensorFlow backend), records nothing;
  - a batched numpy float32 loop that records every gate and state;
  - rnntrace --record all --trace FILE.npz --quiet --timings: compute_s (cell math and recording into the
    trace's blocks, no file I/O: each block is written to disk between blocks, timed as write_s) and total_s
    (the whole command: reading the input, computing, writing the full trace);
  - the same recording run and the predictions-only whole model with --precision f64, against float32;
  - a GRU with reset_after=False (fused, two passes per step) against the portable kernels;
  - the same with RNNTRACE_KERNELS=avx2 (the fused steps compiled for AVX2) and RNNTRACE_KERNELS=portable
    (the portable kernels: gemm products and separate activation passes);
  - rnntrace --record none (predictions only);
  - the whole model (the layer -> Dense(1), saved as model.keras) with `rnntrace run --model`: with the full
    .npz trace of every layer, and with --quiet --expected only, side by side with that model's
    model.predict in the same run; peak memory (max RSS) of each rnntrace process.
It checks rnntrace's predictions against Keras's (--expected, 1e-5) and prints a table with ratios, then a
scaling table (rnntrace compute_s as batch, timesteps and units double) and the peak memory of a 2-layer stacked
LSTM's `run --trace t.npz` at 100 and 2000 timesteps.
"""
import argparse, json, os, subprocess, sys, tempfile, time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(HERE, "..", "target", "release", "rnntrace")


def times(fn, repeats):
    fn()  # warm
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return ts


def median_time(fn, repeats):
    return float(np.median(times(fn, repeats)))


def numpy_loop(cell, x, k, r, b, units):
    """Batched float32 forward that keeps every gate and state (what users write by hand)."""
    B, T, _ = x.shape
    xp = (x.reshape(B * T, -1) @ k).reshape(B, T, -1) + (b if cell == "lstm" else b[0])
    h = np.zeros((B, units), np.float32)
    c = np.zeros((B, units), np.float32)
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))
    rec = []
    for t in range(T):
        if cell == "lstm":
            z = xp[:, t] + h @ r
            i, f, g, o = sig(z[:, :units]), sig(z[:, units:2 * units]), np.tanh(z[:, 2 * units:3 * units]), sig(z[:, 3 * units:])
            c = f * c + i * g
            h = o * np.tanh(c)
            rec.append((i, f, g, o, h, c))
        else:
            mh = h @ r + b[1]
            zr = sig(xp[:, t, :2 * units] + mh[:, :2 * units])
            zg, rg = zr[:, :units], zr[:, units:]
            hh = np.tanh(xp[:, t, 2 * units:] + rg * mh[:, 2 * units:])
            h = zg * h + (1 - zg) * hh
            rec.append((zg, rg, hh, h))
    return h, rec


def rnntrace(args, repeats, env=None):
    def once():
        for i, a in enumerate(args):
            if a == "--trace" and os.path.exists(args[i + 1]):
                os.remove(args[i + 1])  # time writing the trace, not unlinking the previous run's
        # Peak memory from GNU time (a small parent): a child forked from this Python process would report
        # Python's own resident memory (TensorFlow loaded) as its high-water mark.
        fd, rss_file = tempfile.mkstemp()
        os.close(fd)
        t = time.perf_counter()
        out = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss_file, BIN, *args, "--timings"],
                             capture_output=True, text=True, env={**os.environ, **(env or {})})
        wall = time.perf_counter() - t
        if out.returncode != 0:
            sys.exit(f"rnntrace failed ({out.returncode}): {out.stderr}")
        with open(rss_file) as f:
            maxrss_kb = float(f.read().split()[-1])
        os.remove(rss_file)
        err = out.stderr
        r = json.loads(err.strip().splitlines()[-1])
        r["wall_s"] = wall  # the whole process as the caller sees it (start-up and exit included)
        r["maxrss_mb"] = maxrss_kb / 1024
        return r
    once()
    runs = [once() for _ in range(repeats)]
    med = {k: float(np.median([r[k] for r in runs])) for k in runs[0] if k.endswith("_s")}
    med["kernels"] = runs[0].get("kernels", "?")
    med["maxrss_mb"] = max(r["maxrss_mb"] for r in runs)
    return med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--units", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-scaling", action="store_true")
    a = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    import torch
    import keras
    import tensorflow as tf
    torch.set_num_threads(2)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    rng = np.random.default_rng(0)
    B, T, F, U = a.batch, a.steps, a.features, a.units
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    tmp = tempfile.mkdtemp()
    np.save(os.path.join(tmp, "x.npy"), x)
    rows = []
    for cell in ("lstm", "gru"):
        layer = keras.layers.LSTM(U) if cell == "lstm" else keras.layers.GRU(U)
        model = keras.Sequential([keras.Input((T, F)), layer])
        w = [v * 1.0 for v in layer.get_weights()]
        w[2] = (rng.standard_normal(w[2].shape) * 0.1).astype(np.float32)
        layer.set_weights(w)
        k, r, b = layer.get_weights()
        wpath = os.path.join(tmp, f"{cell}.npz")
        np.savez(wpath, kernel=k, recurrent_kernel=r, bias=b)
        expected = model.predict(x, batch_size=B, verbose=0)
        np.save(os.path.join(tmp, f"{cell}_expected.npy"), expected)
        t_keras = median_time(lambda: model.predict(x, batch_size=B, verbose=0), a.repeats)

        # PyTorch with the same weights (layout conversion as in NUMERICS.md).
        if cell == "lstm":
            m = torch.nn.LSTM(F, U, batch_first=True)
            with torch.no_grad():
                m.weight_ih_l0.copy_(torch.from_numpy(k.T.copy()))
                m.weight_hh_l0.copy_(torch.from_numpy(r.T.copy()))
                m.bias_ih_l0.copy_(torch.from_numpy(b))
                m.bias_hh_l0.zero_()
        else:
            m = torch.nn.GRU(F, U, batch_first=True)
            perm = np.r_[np.arange(U, 2 * U), np.arange(0, U), np.arange(2 * U, 3 * U)]  # z,r,h -> r,z,n
            with torch.no_grad():
                m.weight_ih_l0.copy_(torch.from_numpy(k[:, perm].T.copy()))
                m.weight_hh_l0.copy_(torch.from_numpy(r[:, perm].T.copy()))
                m.bias_ih_l0.copy_(torch.from_numpy(b[0][perm].copy()))
                m.bias_hh_l0.copy_(torch.from_numpy(b[1][perm].copy()))
        xt = torch.from_numpy(x)
        with torch.no_grad():
            torch_out = m(xt)[0][:, -1].numpy()
            # PyTorch varies most from run to run here: keep its fastest run as well as the median.
            ts = times(lambda: m(xt), 3 * a.repeats)
            t_torch, t_torch_min = float(np.median(ts)), min(ts)
        assert np.abs(torch_out - expected).max() < 1e-4, "PyTorch conversion mismatch"
        t_numpy = median_time(lambda: numpy_loop(cell, x, k, r, b, U), max(3, a.repeats // 2))

        base = [cell, "--weights", wpath, "--input", os.path.join(tmp, "x.npy"), "--quiet"]
        trace = os.path.join(tmp, f"{cell}_trace.npz")
        # The whole model: this layer -> Dense(1), saved as .keras, against its own model.predict.
        whole = keras.Sequential([keras.Input((T, F)), layer, keras.layers.Dense(1)])
        mpath = os.path.join(tmp, f"{cell}_model.keras")
        whole.save(mpath)
        mexp = os.path.join(tmp, f"{cell}_model_expected.npy")
        np.save(mexp, whole.predict(x, batch_size=B, verbose=0))
        t_keras_model = median_time(lambda: whole.predict(x, batch_size=B, verbose=0), a.repeats)
        mbase = ["run", "--model", mpath, "--input", os.path.join(tmp, "x.npy"), "--expected", mexp, "--quiet"]
        mtrace = os.path.join(tmp, f"{cell}_model_trace.npz")
        run_full = rnntrace(mbase + ["--trace", mtrace], a.repeats)
        run_quiet = rnntrace(mbase, a.repeats)
        full = rnntrace(base + ["--record", "all", "--trace", trace, "--expected", os.path.join(tmp, f"{cell}_expected.npy")], a.repeats)
        none = rnntrace(base + ["--record", "none"], a.repeats)
        portable = rnntrace(base + ["--record", "all", "--trace", trace], a.repeats, {"RNNTRACE_KERNELS": "portable"})
        avx2 = rnntrace(base + ["--record", "all", "--trace", trace], a.repeats, {"RNNTRACE_KERNELS": "avx2"})
        gflop = 2 * B * T * (F + U) * (4 if cell == "lstm" else 3) * U / 1e9
        # float64: the same recording run and the predictions-only whole model, against float32's.
        f64 = rnntrace(base + ["--record", "all", "--trace", os.path.join(tmp, f"{cell}_trace64.npz"), "--precision", "f64"],
                       a.repeats)
        run_f64 = rnntrace(mbase + ["--precision", "f64"], a.repeats)
        rows.append((cell, t_torch, t_keras, t_numpy, full, none, gflop, os.path.getsize(trace), portable, t_torch_min, avx2,
                     t_keras_model, run_full, run_quiet, os.path.getsize(mtrace), f64, run_f64))

    # GRU with reset_after=False (Keras 2's default): fused (two passes per step) against portable.
    ra = keras.layers.GRU(U, reset_after=False)
    keras.Sequential([keras.Input((T, F)), ra])
    k, r, b = ra.get_weights()
    b = (rng.standard_normal(b.shape) * 0.1).astype(np.float32)
    np.savez(os.path.join(tmp, "gru_ra.npz"), kernel=k, recurrent_kernel=r, bias=b)
    rbase = ["gru", "--weights", os.path.join(tmp, "gru_ra.npz"), "--input", os.path.join(tmp, "x.npy"), "--quiet",
             "--record", "all", "--trace", os.path.join(tmp, "gru_ra_trace.npz")]
    ra_fused = rnntrace(rbase, a.repeats)
    ra_portable = rnntrace(rbase, a.repeats, {"RNNTRACE_KERNELS": "portable"})

    print(f"\ncase: {B} sequences x {T} steps x {F} features -> {U} units, float32, 2 threads; median of {a.repeats} warm runs\n")
    print("| | LSTM | GRU |")
    print("|---|---|---|")
    def line(label, f):
        print(f"| {label} | " + " | ".join(f(r) for r in rows) + " |")
    line("PyTorch forward (records nothing): median (fastest)", lambda r: f"{r[1]:.3f} s ({r[9]:.3f} s)")
    line("Keras model.predict (records nothing)", lambda r: f"{r[2]:.3f} s")
    line("numpy loop recording every gate", lambda r: f"{r[3]:.3f} s")
    line("theoretical limit: FLOPs at 2 cores' AVX-512 FMA peak (~320 GFLOP/s)", lambda r: f"{r[6] / 320:.3f} s")
    line(f"rnntrace compute, every gate and state recorded ({rows[0][4]['kernels']} kernels)", lambda r: f"**{r[4]['compute_s']:.3f} s** ({r[4]['compute_s'] / r[1]:.2f}x PyTorch's median, {r[4]['compute_s'] / r[9]:.2f}x its fastest, {r[4]['compute_s'] / (r[6] / 320):.1f}x the limit)")
    line("the same, fused kernels for AVX2 (RNNTRACE_KERNELS=avx2)", lambda r: f"{r[10]['compute_s']:.3f} s ({r[10]['kernels']})")
    line("the same, portable kernels (RNNTRACE_KERNELS=portable)", lambda r: f"{r[8]['compute_s']:.3f} s")
    line("rnntrace compute, predictions only (--record none)", lambda r: f"{r[5]['compute_s']:.3f} s")
    line("rnntrace whole command: read, compute, write full .npz trace", lambda r: f"{r[4]['total_s']:.3f} s ({r[4]['total_s'] / r[2]:.2f}x Keras predict)")
    line("trace size", lambda r: f"{r[7] / 1e6:.0f} MB")
    line("peak memory (max RSS), whole command with the .npz trace", lambda r: f"{r[4]['maxrss_mb']:.0f} MB")
    line("**whole model** (the layer -> Dense(1), model.keras): Keras model.predict", lambda r: f"{r[11]:.3f} s")
    line("rnntrace run --model --expected --trace FILE.npz --quiet: whole process (load, compute, write)", lambda r: f"**{r[12]['wall_s']:.3f} s** ({r[12]['wall_s'] / r[11]:.2f}x Keras predict; load {r[12]['load_s']:.3f}, compute {r[12]['compute_s']:.3f}, write {r[12]['write_s']:.3f})")
    line("rnntrace run --model --expected --quiet: whole process", lambda r: f"{r[13]['wall_s']:.3f} s ({r[13]['wall_s'] / r[11]:.2f}x Keras predict; compute {r[13]['compute_s']:.3f})")
    line("run --model peak memory (max RSS): with the .npz trace / without", lambda r: f"{r[12]['maxrss_mb']:.0f} MB / {r[13]['maxrss_mb']:.0f} MB")
    line("run --model trace size", lambda r: f"{r[14] / 1e6:.0f} MB")
    line("matrix-product FLOPs", lambda r: f"{r[6]:.1f} GFLOP ({r[6] / r[4]['compute_s']:.0f} GFLOP/s)")
    line(f"--precision f64: compute, every gate and state recorded ({rows[0][15]['kernels']} kernels)", lambda r: f"**{r[15]['compute_s']:.3f} s** ({r[15]['compute_s'] / r[4]['compute_s']:.2f}x float32)")
    line("--precision f64: run --model --expected --quiet, compute", lambda r: f"{r[16]['compute_s']:.3f} s ({r[16]['compute_s'] / r[13]['compute_s']:.2f}x float32)")
    print(f"\nGRU reset_after=False, compute, every gate recorded: {ra_fused['compute_s']:.3f} s ({ra_fused['kernels']}), "
          f"portable kernels {ra_portable['compute_s']:.3f} s")
    # Memory of a 2-layer stack (LSTM(U, return_sequences) -> LSTM(U) -> Dense(1)) with the full .npz trace, as the
    # timesteps grow 20x: the layers are chained block by block, so no layer's whole output sequence is held.
    stack = keras.Sequential([keras.Input((None, F)), keras.layers.LSTM(U, return_sequences=True), keras.layers.LSTM(U),
                              keras.layers.Dense(1)])
    spath = os.path.join(tmp, "stack.keras")
    stack.save(spath)
    print("\n2-layer stacked LSTM, 128 sequences, `run --model --trace t.npz --quiet`:\n")
    print("| steps | input file | peak memory (max RSS) | trace | whole process |")
    print("|---|---|---|---|---|")
    for tt in (T, 20 * T):
        xs = rng.standard_normal((128, tt, F)).astype(np.float32)
        np.save(os.path.join(tmp, "xs.npy"), xs)
        st = os.path.join(tmp, "stack_trace.npz")
        r = rnntrace(["run", "--model", spath, "--input", os.path.join(tmp, "xs.npy"), "--quiet", "--trace", st], 1)
        print(f"| {tt} | {xs.nbytes / 1e6:.0f} MB | {r['maxrss_mb']:.0f} MB | {os.path.getsize(st) / 1e6:.0f} MB | {r['wall_s']:.2f} s |")
        os.remove(st)
    if a.no_scaling:
        return
    print("\nrnntrace compute_s (--record all, streamed to .npz), LSTM, as one dimension doubles:\n")
    print("| batch | steps | units | compute_s |")
    print("|---|---|---|---|")
    for (bb, tt, uu) in [(B // 2, T, U), (B, T, U), (2 * B, T, U), (B, 2 * T, U), (B, T, 2 * U)]:
        xs = rng.standard_normal((bb, tt, F)).astype(np.float32)
        np.save(os.path.join(tmp, "xs.npy"), xs)
        np.savez(os.path.join(tmp, "ws.npz"), kernel=rng.standard_normal((F, 4 * uu)).astype(np.float32) * 0.1,
                 recurrent_kernel=rng.standard_normal((uu, 4 * uu)).astype(np.float32) * 0.1,
                 bias=np.zeros(4 * uu, np.float32))
        r = rnntrace(["lstm", "--weights", os.path.join(tmp, "ws.npz"), "--input", os.path.join(tmp, "xs.npy"), "--quiet",
                      "--record", "all", "--trace", os.path.join(tmp, "ts.npz")], max(3, a.repeats // 2))
        print(f"| {bb} | {tt} | {uu} | {r['compute_s']:.3f} s |")


if __name__ == "__main__":
    main()
