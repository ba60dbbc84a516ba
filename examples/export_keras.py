"""Export what rnntrace needs from your own Keras model, so you can check rnntrace against it in two commands.

    pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0    # tf-keras only for Keras 2 .h5 files
    python examples/export_keras.py MODEL.keras INPUT.npy [INPUT2.npy ...] OUT_DIR

Writes into OUT_DIR:
  expected.npy                 model.predict(INPUT) (expected_0.npy, expected_1.npy, … for several outputs)
  <layer>.json, <layer>.npz    each recurrent layer's weights (get_weights() order / kernel, recurrent_kernel, bias)
  <layer>_input.npy            what that layer receives (the output of the layers before it)
  <layer>_output.npy           that layer's own output (Keras)
  <layer>_h_seq.npy            Keras's hidden state after every step (the layer rebuilt with return_sequences=True)
  <layer>_mask.npy             the Keras mask the layer receives (Embedding(mask_zero=True), Masking), if any
  commands.sh                  the rnntrace commands that check the whole model and each layer

Then:
    rnntrace run --model MODEL.keras --input INPUT.npy --expected OUT_DIR/expected.npy
    sh OUT_DIR/commands.sh
A model with several inputs takes one INPUT per model input, in the model's order; one with several
outputs gets one expected file per output, each passed to `run` with its own --expected. Bidirectional layers
are exported as <layer>_forward / <layer>_backward; RNN(LSTMCell|GRUCell|SimpleRNNCell) layers like the
LSTM/GRU/SimpleRNN they compute; each cell of an RNN([cells]) as <layer>_cell_<i>, reading the outputs of
the cell before. A layer whose initial_state comes from another layer (an encoder-decoder) is checked by
the whole-model command only. A Keras 2 (tf-keras) .h5 is loaded with tf_keras, and its hard_sigmoid is
exported as hard_sigmoid_keras2.
"""
import json, os, shlex, sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np


def load(path):
    """Keras 3 first; a legacy file Keras 3 cannot read is retried with tf_keras (Keras 2 semantics)."""
    import keras
    try:
        return keras.models.load_model(path, compile=False), keras, False
    except Exception:
        import tf_keras
        return tf_keras.models.load_model(path, compile=False), tf_keras, True


def split_mask(p):
    """A sub-model's prediction: Keras returns [tensor, mask] when the tensor carries a mask."""
    if isinstance(p, (list, tuple)):
        if len(p) == 2 and np.asarray(p[1]).ndim == 2 and np.asarray(p[1]).dtype == bool:
            return np.asarray(p[0]), np.asarray(p[1])
        return np.asarray(p[0]), None
    return np.asarray(p), None


def recurrent_parts(layer, K):
    """(name, layer, cell class name, config, rebuild) for each recurrent copy inside `layer`, or []."""
    cls = layer.__class__.__name__
    if cls in ("LSTM", "GRU", "SimpleRNN"):
        def rebuild(sub, cfg):
            return sub.__class__.from_config(cfg)
        return [(layer.name, layer, cls, layer.get_config(), rebuild)]
    if cls == "Bidirectional":
        out = []
        for suffix, sub in (("_forward", layer.forward_layer), ("_backward", layer.backward_layer)):
            out.extend((layer.name + suffix, s, c, cfg, rb) for _, s, c, cfg, rb in recurrent_parts(sub, K))
        return out
    if cls == "RNN" and layer.cell.__class__.__name__ in ("LSTMCell", "GRUCell", "SimpleRNNCell"):
        cell_cls = layer.cell.__class__.__name__[: -len("Cell")]
        cfg = dict(layer.cell.get_config())
        cfg.update(go_backwards=layer.go_backwards, return_sequences=layer.return_sequences)

        def rebuild(sub, cfg):
            cell = sub.cell.__class__.from_config(sub.cell.get_config())
            return K.layers.RNN(cell, return_sequences=True, go_backwards=sub.go_backwards)
        return [(layer.name, layer, cell_cls, cfg, rebuild)]
    if cls == "RNN" and layer.cell.__class__.__name__ == "StackedRNNCells":
        # RNN([cells]): rnntrace traces cell i as `<layer>/cell_i`; exported as <layer>_cell_i, each cell
        # reading the previous cell's per-step output (main() chains them).
        out = []
        for i, c in enumerate(layer.cell.cells):
            cname = c.__class__.__name__
            if cname not in ("LSTMCell", "GRUCell", "SimpleRNNCell"):
                return []
            cfg = dict(c.get_config())
            cfg.update(go_backwards=layer.go_backwards, return_sequences=layer.return_sequences)

            def rebuild(sub, cfg, c=c):
                cell = c.__class__.from_config(c.get_config())
                return K.layers.RNN(cell, return_sequences=True, go_backwards=layer.go_backwards)
            out.append((f"{layer.name}_cell_{i}", StackedCell(c), cname[: -len("Cell")], cfg, rebuild))
        return out
    return []


class StackedCell:
    """One cell of an RNN([cells]), seen as the layer an export needs: its weights and return_sequences."""

    def __init__(self, cell):
        self.cell = cell
        self.return_sequences = True

    def get_weights(self):
        return [np.asarray(w) for w in self.cell.weights]


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    model_path, input_paths, out = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
    os.makedirs(out, exist_ok=True)
    model, K, keras2 = load(model_path)
    xs = [np.load(p) for p in input_paths]
    x = xs[0] if len(xs) == 1 else xs
    pred = model.predict(x, verbose=0)
    if len(model.outputs) > 1:
        # Several outputs: one file each, compared in the model's output order.
        outs = [np.asarray(p) for p in pred]
        files = [f"expected_{k}.npy" for k in range(len(outs))]
    else:
        outs, files = [split_mask(pred)[0]], ["expected.npy"]
    for o, f in zip(outs, files):
        np.save(os.path.join(out, f), o)
    inputs = " ".join(f"--input {shlex.quote(p)}" for p in input_paths)
    expects = " ".join(f"--expected {shlex.quote(os.path.join(out, f))}" for f in files)
    cmds = [f"rnntrace run --model {shlex.quote(model_path)} {inputs} {expects} --quiet"]
    for layer in model.layers:
        parts = recurrent_parts(layer, K)
        if not parts:
            continue
        inp = layer.input
        if isinstance(inp, (list, tuple)):
            # Keras 3 lists a mask passed as mask= among a layer's inputs; initial states are float.
            if any("bool" not in str(t.dtype) for t in inp[1:]):
                cmds.append(f"# {layer.name}: its initial_state comes from another layer; checked by the whole-model command")
                continue
            inp = inp[0]
        layer_in, mask = split_mask(K.Model(model.inputs, inp).predict(x, verbose=0))
        for name, sub, cls, cfg, rebuild in parts:
            w = sub.get_weights()
            json.dump([a.tolist() for a in w], open(os.path.join(out, name + ".json"), "w"))
            keys = ["kernel", "recurrent_kernel", "bias"][: len(w)]
            np.savez(os.path.join(out, name + ".npz"), **dict(zip(keys, w)))
            np.save(os.path.join(out, name + "_input.npy"), layer_in)
            cfg = dict(cfg)
            cfg.update(return_sequences=True, return_state=False, stateful=False)
            clone = rebuild(sub, cfg)
            clone(layer_in[:1])
            clone.set_weights(w)
            h_seq = np.asarray(clone(layer_in, mask=mask) if mask is not None else clone(layer_in))
            np.save(os.path.join(out, name + "_h_seq.npy"), h_seq)
            np.save(os.path.join(out, name + "_output.npy"), h_seq if sub.return_sequences else h_seq[:, -1])
            if isinstance(sub, StackedCell):
                # The next cell of the stack reads this cell's outputs, in time order.
                layer_in = h_seq[:, ::-1] if cfg.get("go_backwards") else h_seq
            cell = cls.lower()
            if cell == "simplernn":
                continue  # rnntrace traces SimpleRNN inside `run --model` only
            ra = cfg.get("recurrent_activation", "sigmoid")
            if keras2 and ra == "hard_sigmoid":
                ra = "hard_sigmoid_keras2"
            args = [cell, "--weights", os.path.join(out, name + ".npz"), "--input", os.path.join(out, name + "_input.npy"),
                    "--activation", str(cfg.get("activation", "tanh")), "--recurrent-activation", str(ra),
                    "--expected", os.path.join(out, name + "_h_seq.npy"), "--quiet"]
            if mask is not None:
                np.save(os.path.join(out, name + "_mask.npy"), mask)
                args += ["--mask", os.path.join(out, name + "_mask.npy")]
            if cfg.get("go_backwards"):
                args.append("--go-backwards")
            cmds.append("rnntrace " + " ".join(shlex.quote(a) for a in args))
    with open(os.path.join(out, "commands.sh"), "w") as f:
        f.write("set -e\n" + "\n".join(cmds) + "\n")
    print(f"wrote {out}/: {', '.join(files)}, per-layer weights, inputs and states; run: sh {out}/commands.sh")


if __name__ == "__main__":
    main()
