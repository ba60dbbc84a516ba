"""Export what rnntrace needs from your own Keras model, so you can check rnntrace against it in two commands.

    pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0    # tf-keras only for Keras 2 .h5 files
    python examples/export_keras.py MODEL.keras INPUT.npy OUT_DIR

Writes into OUT_DIR:
  expected.npy                 model.predict(INPUT)
  <layer>.json, <layer>.npz    each recurrent layer's weights (get_weights() order / kernel, recurrent_kernel, bias)
  <layer>_input.npy            what that layer receives (the output of the layers before it)
  <layer>_output.npy           that layer's own output (Keras)
  <layer>_h_seq.npy            Keras's hidden state after every step (the layer rebuilt with return_sequences=True)
  commands.sh                  the rnntrace commands that check the whole model and each layer

Then:
    rnntrace run --model MODEL.keras --input INPUT.npy --expected OUT_DIR/expected.npy
    sh OUT_DIR/commands.sh
Bidirectional layers are exported as <layer>_forward / <layer>_backward. A Keras 2 (tf-keras) .h5 is loaded
with tf_keras, and its hard_sigmoid is exported as hard_sigmoid_keras2.
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


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    model_path, input_path, out = sys.argv[1:]
    os.makedirs(out, exist_ok=True)
    model, K, keras2 = load(model_path)
    x = np.load(input_path)
    np.save(os.path.join(out, "expected.npy"), model.predict(x, verbose=0))
    cmds = [f"rnntrace run --model {shlex.quote(model_path)} --input {shlex.quote(input_path)} "
            f"--expected {shlex.quote(os.path.join(out, 'expected.npy'))} --quiet"]
    recurrent = ("LSTM", "GRU", "SimpleRNN")
    for layer in model.layers:
        cls = layer.__class__.__name__
        if cls not in recurrent + ("Bidirectional",):
            continue
        layer_in = K.Model(model.inputs, layer.input).predict(x, verbose=0)
        parts = [(layer.name, layer)] if cls != "Bidirectional" else [
            (layer.name + "_forward", layer.forward_layer), (layer.name + "_backward", layer.backward_layer)]
        for name, sub in parts:
            w = sub.get_weights()
            json.dump([a.tolist() for a in w], open(os.path.join(out, name + ".json"), "w"))
            keys = ["kernel", "recurrent_kernel", "bias"][: len(w)]
            np.savez(os.path.join(out, name + ".npz"), **dict(zip(keys, w)))
            np.save(os.path.join(out, name + "_input.npy"), layer_in)
            cfg = sub.get_config()
            cfg.update(return_sequences=True, return_state=False, stateful=False)
            clone = sub.__class__.from_config(cfg)
            clone(layer_in[:1])
            clone.set_weights(w)
            h_seq = np.asarray(clone(layer_in))
            np.save(os.path.join(out, name + "_h_seq.npy"), h_seq)
            np.save(os.path.join(out, name + "_output.npy"), h_seq if sub.return_sequences else h_seq[:, -1])
            cell = sub.__class__.__name__.lower()
            if cell == "simplernn":
                continue  # rnntrace traces SimpleRNN inside `run --model` only
            ra = cfg.get("recurrent_activation", "sigmoid")
            if keras2 and ra == "hard_sigmoid":
                ra = "hard_sigmoid_keras2"
            args = [cell, "--weights", os.path.join(out, name + ".npz"), "--input", os.path.join(out, name + "_input.npy"),
                    "--activation", str(cfg.get("activation", "tanh")), "--recurrent-activation", str(ra),
                    "--expected", os.path.join(out, name + "_h_seq.npy"), "--quiet"]
            if cfg.get("go_backwards"):
                args.append("--go-backwards")
            cmds.append("rnntrace " + " ".join(shlex.quote(a) for a in args))
    with open(os.path.join(out, "commands.sh"), "w") as f:
        f.write("set -e\n" + "\n".join(cmds) + "\n")
    print(f"wrote {out}/: expected.npy, per-layer weights, inputs and states; run: sh {out}/commands.sh")


if __name__ == "__main__":
    main()
