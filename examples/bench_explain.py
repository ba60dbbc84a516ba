"""`rnntrace explain --methods gradient` against TensorFlow's compiled GradientTape and PyTorch's
forward + backward, on the same model and input, in one run.

    pip install tensorflow-cpu==2.21.0 torch numpy
    cargo build --release
    python examples/bench_explain.py [--batch 512 --steps 100 --features 32 --units 128] [--repeats 7]

For LSTM and GRU it builds a Keras model (recurrent layer, Dense(1) head) with random weights, saves it as
.keras with a random input, then times (the minimum of --repeats warm runs, 2 threads everywhere: on a shared machine the minimum is the
run least disturbed by other jobs):
  - TensorFlow: d output / d input with tf.GradientTape inside a tf.function (compiled, warm), in-process;
  - PyTorch: nn.LSTM / nn.GRU + Linear with the same weights, forward + backward to the input, in-process;
  - rnntrace: the whole process `rnntrace explain --model M.keras --input X.npy --methods gradient --quiet`
    (reading the model and input, the recorded forward pass, backpropagation through time, the unit
    analyses), and its peak resident memory (GNU time's %M).
It checks rnntrace's gradient (--save) against TensorFlow's: largest difference relative to the largest value.

    python examples/bench_explain.py --graph [--repeats 7]

times models that go through explain's graph path instead (same sizes, same timing and check), each against
TensorFlow's compiled tape, with the plain chain LSTM(128) → Dense(1) as the reference row of the same run:
  - embedding: Embedding(1000, 32) → LSTM(128) → Dense(1) on 512×100 token ids (a token's attribution is its
    embedding row's gradient summed, as explain reports it; TF: the tape w.r.t. the embedding output, summed
    over the embedding dimension);
  - conv1d: Conv1D(32, 3, padding='same', relu) → LSTM(128) → Dense(1) on 512×100×32;
  - two-input: functional, series (512×100×32) → GRU(128), static (512×8) → Dense(16), Concatenate →
    Dense(1) (both inputs' gradients checked; the error is the larger of the two).
"""
import argparse, os, subprocess, tempfile, time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(HERE, "..", "target", "release", "rnntrace")


def median_time(fn, repeats):
    """Minimum wall time and minimum CPU time (all threads of this process) of warm runs."""
    fn()
    ts, cs = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        ts.append(time.perf_counter() - t)
        cs.append(time.process_time() - c)
    return float(np.min(ts)), float(np.min(cs))


def run_rnntrace(args):
    """Wall time and peak RSS (MiB) of one whole process (GNU time's %M: the forked Python image that
    precedes exec would otherwise count in wait4's ru_maxrss)."""
    t = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", BIN] + args, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    err = p.stderr.decode()
    if p.returncode != 0:
        raise SystemExit(f"rnntrace failed: {err}")
    m, u, sy = err.strip().splitlines()[-1].split()
    return dt, int(m) / 1024, float(u) + float(sy)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--units", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--graph", action="store_true",
                    help="time the graph-path models (Embedding, Conv1D, two-input functional) instead")
    a = ap.parse_args()
    if a.graph:
        return graph_bench(a)
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    import keras
    import torch
    torch.set_num_threads(2)
    B, T, F, U = a.batch, a.steps, a.features, a.units
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (B, T, F)).astype(np.float32)
    tmp = tempfile.mkdtemp()
    xp = os.path.join(tmp, "x.npy")
    np.save(xp, x)
    rows = []
    for cell in ["lstm", "gru"]:
        layer = keras.layers.LSTM(U) if cell == "lstm" else keras.layers.GRU(U)
        model = keras.Sequential([keras.Input((T, F)), layer, keras.layers.Dense(1)])
        for l in model.layers:
            l.set_weights([rng.uniform(-0.2, 0.2, w.shape).astype(np.float32) for w in l.get_weights()])
        mp = os.path.join(tmp, f"{cell}.keras")
        model.save(mp)

        @tf.function
        def tf_grad(xv):
            with tf.GradientTape() as tape:
                tape.watch(xv)
                y = tf.reduce_sum(model(xv)[:, 0])
            return tape.gradient(y, xv)

        xt = tf.constant(x)
        t_tf = median_time(lambda: tf_grad(xt).numpy(), a.repeats)
        g_tf = tf_grad(xt).numpy()

        k, r, b = [np.asarray(w) for w in layer.get_weights()]
        dk, db = [np.asarray(w) for w in model.layers[-1].get_weights()]
        if cell == "lstm":
            mod = torch.nn.LSTM(F, U, batch_first=True)
            with torch.no_grad():
                mod.weight_ih_l0.copy_(torch.tensor(k.T)); mod.weight_hh_l0.copy_(torch.tensor(r.T))
                mod.bias_ih_l0.copy_(torch.tensor(b)); mod.bias_hh_l0.zero_()
        else:
            perm = lambda m: np.concatenate([m[..., U:2 * U], m[..., :U], m[..., 2 * U:]], -1)
            mod = torch.nn.GRU(F, U, batch_first=True)
            with torch.no_grad():
                mod.weight_ih_l0.copy_(torch.tensor(perm(k).T)); mod.weight_hh_l0.copy_(torch.tensor(perm(r).T))
                mod.bias_ih_l0.copy_(torch.tensor(perm(b[0]))); mod.bias_hh_l0.copy_(torch.tensor(perm(b[1])))
        lin = torch.nn.Linear(U, 1)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(dk.T)); lin.bias.copy_(torch.tensor(db))

        def torch_fb():
            xv = torch.tensor(x, requires_grad=True)
            out, _ = mod(xv)
            lin(out[:, -1])[:, 0].sum().backward()
            return xv.grad

        t_torch = median_time(torch_fb, a.repeats)
        g_torch = torch_fb().numpy()

        args = ["explain", "--model", mp, "--input", xp, "--methods", "gradient", "--quiet"]
        run_rnntrace(args)  # warm the page cache
        runs = [run_rnntrace(args) for _ in range(a.repeats)]
        t_rt = (float(np.min([r[0] for r in runs])), float(np.min([r[2] for r in runs])))
        rss = max(r[1] for r in runs)
        npz = os.path.join(tmp, f"{cell}.npz")
        run_rnntrace(args + ["--save", npz])
        g_rt = np.load(npz)["attributions/gradient"]
        err_tf = float(np.abs(g_rt - g_tf).max() / np.abs(g_tf).max())
        err_torch = float(np.abs(g_torch - g_tf).max() / np.abs(g_tf).max())
        rows.append((cell, t_tf, t_torch, t_rt, rss, err_tf, err_torch))
    print(f"\nexplain --methods gradient, {B}×{T}×{F} → {U}, Dense(1), 2 threads, min of {a.repeats}")
    print("wall / CPU seconds (CPU: all threads; on a loaded machine CPU time is the steadier figure)")
    print(f"{'cell':5} {'TF GradientTape (tf.function)':>30} {'torch fwd+bwd':>16} {'rnntrace (whole process)':>26} {'peak RSS':>9} {'rel err vs TF':>14} {'torch vs TF':>12}")
    for cell, t_tf, t_torch, t_rt, rss, e, et in rows:
        f = lambda t: f"{t[0]:.3f} / {t[1]:.3f}"
        print(f"{cell:5} {f(t_tf):>30} {f(t_torch):>16} {f(t_rt):>26} {rss:>5.0f} MiB {e:>14.2e} {et:>12.2e}")


def graph_bench(a):
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    import keras
    L = keras.layers
    B, T, F, U, V, S = a.batch, a.steps, a.features, a.units, 1000, 8
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (B, T, F)).astype(np.float32)
    ids = rng.integers(0, V, (B, T)).astype(np.int32)
    st = rng.normal(0, 1, (B, S)).astype(np.float32)
    tmp = tempfile.mkdtemp()
    paths = {}
    for name, arr in [("x", x), ("ids", ids), ("static", st)]:
        paths[name] = os.path.join(tmp, f"{name}.npy")
        np.save(paths[name], arr)

    def randomise(model):
        for l in model.layers:
            l.set_weights([rng.uniform(-0.2, 0.2, w.shape).astype(np.float32) for w in l.get_weights()])

    cases = []
    # The chain reference: the same recurrent layer and head as the graph cases, through the chain path.
    chain = keras.Sequential([keras.Input((T, F)), L.LSTM(U), L.Dense(1)])
    randomise(chain)

    @tf.function
    def g_chain(xv):
        with tf.GradientTape() as tape:
            tape.watch(xv)
            y = tf.reduce_sum(chain(xv)[:, 0])
        return [tape.gradient(y, xv)]
    cases.append(("chain LSTM (reference)", chain, [tf.constant(x)], g_chain, ["x"]))

    emb = keras.Sequential([keras.Input((T,), dtype="int32"), L.Embedding(V, F), L.LSTM(U), L.Dense(1)])
    randomise(emb)

    @tf.function
    def g_emb(iv):
        e = emb.layers[0](iv)
        with tf.GradientTape() as tape:
            tape.watch(e)
            y = tf.reduce_sum(emb.layers[2](emb.layers[1](e))[:, 0])
        return [tf.reduce_sum(tape.gradient(y, e), -1)]
    cases.append(("embedding → LSTM", emb, [tf.constant(ids)], g_emb, ["ids"]))

    conv = keras.Sequential([keras.Input((T, F)), L.Conv1D(32, 3, padding="same", activation="relu"),
                             L.LSTM(U), L.Dense(1)])
    randomise(conv)

    @tf.function
    def g_conv(xv):
        with tf.GradientTape() as tape:
            tape.watch(xv)
            y = tf.reduce_sum(conv(xv)[:, 0])
        return [tape.gradient(y, xv)]
    cases.append(("conv1d → LSTM", conv, [tf.constant(x)], g_conv, ["x"]))

    si, ti = keras.Input((T, F), name="series"), keras.Input((S,), name="static")
    out = L.Dense(1)(L.Concatenate()([L.GRU(U)(si), L.Dense(16)(ti)]))
    two = keras.Model([si, ti], out)
    randomise(two)

    @tf.function
    def g_two(xv, sv):
        with tf.GradientTape() as tape:
            tape.watch([xv, sv])
            y = tf.reduce_sum(two([xv, sv])[:, 0])
        return tape.gradient(y, [xv, sv])
    cases.append(("two-input GRU + Dense", two, [tf.constant(x), tf.constant(st)], g_two, ["x", "static"]))

    rows = []
    for label, model, tin, fn, ins in cases:
        mp = os.path.join(tmp, f"m{len(rows)}.keras")
        model.save(mp)
        t_tf = median_time(lambda: [g.numpy() for g in fn(*tin)], a.repeats)
        g_tf = [g.numpy() for g in fn(*tin)]
        args = ["explain", "--model", mp, "--methods", "gradient", "--quiet"]
        for i in ins:
            args += ["--input", paths[i]]
        run_rnntrace(args)  # warm the page cache
        runs = [run_rnntrace(args) for _ in range(a.repeats)]
        t_rt = (float(np.min([r[0] for r in runs])), float(np.min([r[2] for r in runs])))
        rss = max(r[1] for r in runs)
        npz = os.path.join(tmp, f"m{len(rows)}.npz")
        run_rnntrace(args + ["--save", npz])
        err = 0.0
        for j, (i, gt) in enumerate(zip(ins, g_tf)):
            # Several inputs: --save writes FILE-NAME.npz per input, NAME the model's input name.
            f = npz if len(ins) == 1 else npz[:-4] + f"-{model.inputs[j].name}.npz"
            g_rt = np.load(f)["attributions/gradient"].reshape(gt.shape)
            err = max(err, float(np.abs(g_rt - gt).max() / np.abs(gt).max()))
        rows.append((label, t_tf, t_rt, rss, err))
    print(f"\nexplain --methods gradient through the graph path, {B}×{T}, 2 threads, min of {a.repeats}")
    print("wall / CPU seconds (CPU: all threads; on a loaded machine CPU time is the steadier figure)")
    print(f"{'model':24} {'TF GradientTape (tf.function)':>30} {'rnntrace (whole process)':>26} {'CPU vs TF':>10} {'peak RSS':>9} {'rel err vs TF':>14}")
    for label, t_tf, t_rt, rss, e in rows:
        f = lambda t: f"{t[0]:.3f} / {t[1]:.3f}"
        print(f"{label:24} {f(t_tf):>30} {f(t_rt):>26} {t_rt[1] / t_tf[1]:>9.2f}× {rss:>5.0f} MiB {e:>14.2e}")


if __name__ == "__main__":
    main()
