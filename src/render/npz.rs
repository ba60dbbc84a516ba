/*!
The `.npz` trace (`--trace FILE.npz`): NumPy arrays, written while the engine runs.

Per-step arrays are **time-major**, `(steps, sequences, units)` with steps in processing order, like PyTorch's
`(seq_len, batch, hidden)`; `np.swapaxes(a, 0, 1)` gives Keras's `(batch, timesteps, units)`.

| member | shape | when |
|---|---|---|
| `gates/i`, `gates/f`, `gates/c`, `gates/o` (GRU: `gates/z`, `gates/r`, `gates/h`) | (T, B, U) | `--record all` |
| `pre/<gate>` | (T, B, U) | `--record all --record-pre` |
| `state/h`, `state/c` (LSTM) | (T, B, U) | `--record all` or `states` |
| `output` | (T, B, U) | with a mask (otherwise it equals `state/h`) |
| `masked` | (T, B) bool | with a mask |
| `input` | (B, T, F) | always (`run` on a model with several inputs: `inputs/<name>` each, in its own shape) |
| `outputs/<name>` | the output's shape | `run` on a model with several outputs: each (`layer`, or `layer#k` for its output k) |
| `input_index` | (T,) int64 | always: the input row each step read |
| `predictions` | (B, outputs) | always |
| `last_output`, `initial_state/h`, `final_state/h` (and `/c`) | (B, U) | always |
| `metadata` | () unicode | always: `json.loads(np.load(p)["metadata"][()])` |

A `proj_size` LSTM's `state/h`, `output`, `last_output`, `initial_state/h` and `final_state/h` have the
projection's width P, not U.
*/

use crate::cell::CellKind;
use crate::cell::Real;
use crate::engine::Stores;
use crate::error::Result;
use crate::io::npz_writer::{ArrayId, NpzStream};
use crate::trace::{LayerTrace, Record, Trace};
use std::path::Path;

/// The shape of a run whose trace is streamed: what [`TraceNpz::new`] declares members for.
#[derive(Debug, Clone, Copy)]
pub struct NpzRun {
    /// The cell.
    pub kind: CellKind,
    /// Sequences in the batch.
    pub sequences: usize,
    /// Timesteps per sequence.
    pub steps: usize,
    /// Units of the layer.
    pub units: usize,
    /// Width of `h` and the output: `units`, or a `proj_size` LSTM's projection width.
    pub h_units: usize,
    /// Whether steps may be masked (a mask or a mask value was given).
    pub masked: bool,
}

/// An `.npz` trace being written. Each block of steps goes to disk as soon as the engine has computed
/// it, straight from the engine's per-gate arrays (time-major, so a block is one contiguous run of each
/// member): no copy, no second buffer, and memory stays at one block whatever the number of steps.
pub struct TraceNpz<T> {
    stream: NpzStream,
    members: Members,
    _t: std::marker::PhantomData<T>,
}

/// The streamed members of one layer, under a prefix (`""` for a single layer, `"<layer>/"` in a model's).
struct Members {
    gates: Vec<ArrayId>,
    pre: Vec<ArrayId>,
    h: Option<ArrayId>,
    c: Option<ArrayId>,
    out: Option<ArrayId>,
    masked: Option<ArrayId>,
}

impl Members {
    fn declare<T: Real>(
        stream: &mut NpzStream,
        prefix: &str,
        run: NpzRun,
        record: Record,
    ) -> Result<Members> {
        let (b, t, u) = (run.sequences, run.steps, run.units);
        let shape = [t, b, u];
        // h and the output have the projection's width for a proj_size LSTM.
        let h_shape = [t, b, run.h_units];
        let names = run.kind.gate_names();
        let mut gates = Vec::new();
        let mut pre = Vec::new();
        if record.gates {
            for g in names {
                gates.push(stream.declare(
                    &format!("{prefix}gates/{g}"),
                    T::DESCR,
                    &shape,
                    T::BYTES,
                )?);
            }
        }
        if record.pre {
            for g in names {
                pre.push(stream.declare(
                    &format!("{prefix}pre/{g}"),
                    T::DESCR,
                    &shape,
                    T::BYTES,
                )?);
            }
        }
        let masking = run.masked;
        let (mut h, mut c, mut out) = (None, None, None);
        if record.states {
            h = Some(stream.declare(&format!("{prefix}state/h"), T::DESCR, &h_shape, T::BYTES)?);
            if run.kind.has_cell_state() {
                c = Some(stream.declare(
                    &format!("{prefix}state/c"),
                    T::DESCR,
                    &shape,
                    T::BYTES,
                )?);
            }
            if masking {
                out = Some(stream.declare(
                    &format!("{prefix}output"),
                    T::DESCR,
                    &h_shape,
                    T::BYTES,
                )?);
            }
        }
        let masked = if masking {
            Some(stream.declare(&format!("{prefix}masked"), "|b1", &[t, b], 1)?)
        } else {
            None
        };
        Ok(Members {
            gates,
            pre,
            h,
            c,
            out,
            masked,
        })
    }

    /// Appends one block of steps.
    fn write_block<T: Real>(&self, stream: &mut NpzStream, s: &Stores<T>) -> Result<()> {
        let mut owned: Vec<(ArrayId, Vec<u8>)> = Vec::new();
        let mut parts: Vec<(ArrayId, &[u8])> = Vec::new();
        let arrays = (self.gates.iter().zip(&s.gates))
            .chain(self.pre.iter().zip(&s.pre))
            .chain(self.h.iter().zip(&s.h))
            .chain(self.c.iter().zip(&s.c))
            .chain(self.out.iter().zip(&s.out));
        for (id, a) in arrays {
            match a.as_slice() {
                Some(v) => parts.push((*id, bytes_of(v))),
                None => {
                    let mut b = Vec::new();
                    T::extend_le(a.iter().copied(), &mut b);
                    owned.push((*id, b));
                }
            }
        }
        if let Some(id) = self.masked {
            owned.push((id, s.masked.iter().map(|&m| m as u8).collect()));
        }
        parts.extend(owned.iter().map(|(id, b)| (*id, b.as_slice())));
        stream.append_all(&parts)
    }
}

/// Adds a layer's small arrays under `prefix`: the last output, initial and final states, and the input
/// row each step read.
fn add_layer_ends<T: Real>(stream: &mut NpzStream, prefix: &str, l: &LayerTrace<T>) -> Result<()> {
    let mut add = |name: &str, a: &ndarray::Array2<T>| {
        let v: Vec<T> = a.iter().copied().collect();
        stream.add(
            &format!("{prefix}{name}"),
            T::DESCR,
            a.shape(),
            bytes_of(&v),
        )
    };
    add("last_output", &l.last_output)?;
    add("initial_state/h", &l.h0)?;
    add("final_state/h", &l.final_h)?;
    if let (Some(c0), Some(fc)) = (&l.c0, &l.final_c) {
        add("initial_state/c", c0)?;
        add("final_state/c", fc)?;
    }
    let idx: Vec<u8> = l
        .input_index
        .iter()
        .flat_map(|&i| (i as i64).to_le_bytes())
        .collect();
    stream.add(
        &format!("{prefix}input_index"),
        "<i8",
        &[l.input_index.len()],
        &idx,
    )
}

/// A layer's conventions as the metadata states them.
fn layer_meta<T: Real>(l: &LayerTrace<T>) -> serde_json::Value {
    let mut m = serde_json::json!({
        "name": l.name, "cell": l.kind.name(), "units": l.units, "features": l.features,
        "activation": l.activation.name(), "recurrent_activation": l.recurrent_activation.name(),
        "reset_after": l.reset_after, "go_backwards": l.go_backwards, "carry_state": l.carry_state,
        "gates": l.kind.gate_names(), "kernels": l.kernels.name(),
    });
    if let (Some(p), Some(o)) = (l.policy, m.as_object_mut()) {
        o.insert("dtype_policy".into(), p.name().into());
    }
    m
}

/// Adds `metadata`: a 0-d unicode array (UTF-32 code units).
fn add_metadata(stream: &mut NpzStream, meta: &str) -> Result<()> {
    let chars: Vec<u8> = meta
        .chars()
        .flat_map(|ch| (ch as u32).to_le_bytes())
        .collect();
    stream.add(
        "metadata",
        &format!("<U{}", meta.chars().count()),
        &[],
        &chars,
    )
}

fn bytes_of<T: Real>(values: &[T]) -> &[u8] {
    // Little-endian targets store floats exactly as `<f4`/`<f8` expect.
    #[cfg(target_endian = "little")]
    {
        T::as_bytes(values)
    }
    #[cfg(not(target_endian = "little"))]
    compile_error!("the .npz writer assumes a little-endian target")
}

impl<T: Real> TraceNpz<T> {
    /// Declares the streamed members of a run shaped `run`, recording `record`.
    pub fn new(target: &Path, run: NpzRun, record: Record) -> Result<TraceNpz<T>> {
        let mut stream = NpzStream::new(target)?;
        let members = Members::declare::<T>(&mut stream, "", run, record)?;
        Ok(TraceNpz {
            stream,
            members,
            _t: std::marker::PhantomData,
        })
    }

    /// Appends one block of steps.
    pub fn write_block(&mut self, s: &Stores<T>) -> Result<()> {
        self.members.write_block(&mut self.stream, s)
    }

    /// Adds the small arrays and the metadata, and renames the archive into place.
    pub fn finish(
        self,
        window: Option<usize>,
        trace: &Trace<T>,
        comparison: Option<&crate::compare::Comparison>,
    ) -> Result<()> {
        let mut stream = self.stream;
        let l: &LayerTrace<T> = &trace.layers[0];
        match l.x.as_slice() {
            Some(x) => stream.add("input", T::DESCR, l.x.shape(), bytes_of(x))?,
            None => {
                let x: Vec<T> = l.x.iter().copied().collect();
                stream.add("input", T::DESCR, l.x.shape(), bytes_of(&x))?
            }
        }
        let p: Vec<T> = trace.predictions.iter().copied().collect();
        stream.add(
            "predictions",
            T::DESCR,
            trace.predictions.shape(),
            bytes_of(&p),
        )?;
        add_layer_ends(&mut stream, "", l)?;
        let mut meta = layer_meta(l);
        let extra = serde_json::json!({
            "format": "rnntrace-npz/1",
            "layout": "per-step arrays are time-major: (steps, sequences, units), steps in processing order",
            "precision": T::NAME,
            "dense_activation": trace.dense_activation.map(|a| a.name()),
            "comparison": comparison,
            "window": window,
        });
        if let (Some(m), serde_json::Value::Object(e)) = (meta.as_object_mut(), extra) {
            m.extend(e);
        }
        add_metadata(&mut stream, &meta.to_string())?;
        stream.finish()
    }
}

/// A named whole tensor of a model run (an input, an output), C-order values.
pub struct NpzTensor<'a, T> {
    /// The input layer's name, or the output's (`layer`, `layer#k`).
    pub name: String,
    /// Batch first.
    pub shape: Vec<usize>,
    /// `shape`'s product of values.
    pub values: &'a [T],
}

/// A recurrent layer of a model, as [`ModelNpz::new`] declares its members.
#[derive(Debug, Clone)]
pub struct NpzLayer {
    /// The traced name (a Bidirectional's directions: `name/forward`, `name/backward`).
    pub name: String,
    /// Its shape.
    pub run: NpzRun,
}

/// A whole model's `.npz` trace (`run --trace FILE.npz`): every recurrent layer's members as a single
/// layer's, under `<layer>/` (`lstm/gates/i`, `bi/forward/state/h`, …), streamed as each layer runs;
/// then the model's `input` (several inputs: `inputs/<input layer name>` each), `output` (its whole output
/// tensor), `predictions` (per sequence, flattened) — the first output's, when the model has several, and
/// then every output as `outputs/<name>` (`layer`, or `layer#k` for a layer's output k) — and `metadata`
/// (with `layers`, one entry per recurrent layer in order; `inputs` and `outputs`, names in order).
pub struct ModelNpz<T> {
    stream: NpzStream,
    layers: Vec<(String, Members)>,
    _t: std::marker::PhantomData<T>,
}

impl<T: Real> ModelNpz<T> {
    /// Declares every layer's streamed members, then writes the model's inputs (name, shape, C-order
    /// values): one as `input`, several as `inputs/<name>` each.
    pub fn new(
        target: &Path,
        layers: &[NpzLayer],
        record: Record,
        inputs: &[NpzTensor<'_, T>],
    ) -> Result<ModelNpz<T>> {
        let mut stream = NpzStream::new(target)?;
        let mut declared = Vec::with_capacity(layers.len());
        for l in layers {
            let m = Members::declare::<T>(&mut stream, &format!("{}/", l.name), l.run, record)?;
            declared.push((l.name.clone(), m));
        }
        match inputs {
            [one] => stream.add("input", T::DESCR, &one.shape, bytes_of(one.values))?,
            several => {
                for x in several {
                    let member = format!("inputs/{}", x.name);
                    stream.add(&member, T::DESCR, &x.shape, bytes_of(x.values))?;
                }
            }
        }
        Ok(ModelNpz {
            stream,
            layers: declared,
            _t: std::marker::PhantomData,
        })
    }

    /// Appends one block of steps of layer `name`.
    pub fn write_block(&mut self, name: &str, s: &Stores<T>) -> Result<()> {
        match self.layers.iter().find(|(n, _)| n == name) {
            Some((_, m)) => m.write_block(&mut self.stream, s),
            None => Err(crate::error::Error::output(
                "<trace>",
                format!("internal: layer {name} was not declared"),
            )),
        }
    }

    /// Adds each layer's small arrays, the model's output and predictions (the first output's), every
    /// output as `outputs/<name>` when there are several (`more`), and `metadata` (`meta`'s fields plus
    /// `format`, `layout`, `precision` and `layers`), and renames the archive into place.
    pub fn finish(
        self,
        layers: &[LayerTrace<T>],
        output_shape: &[usize],
        trace: &Trace<T>,
        more: &[NpzTensor<'_, T>],
        meta: serde_json::Value,
    ) -> Result<()> {
        let mut stream = self.stream;
        for l in layers {
            add_layer_ends(&mut stream, &format!("{}/", l.name), l)?;
        }
        let p: Vec<T> = trace.predictions.iter().copied().collect();
        stream.add("output", T::DESCR, output_shape, bytes_of(&p))?;
        for o in more {
            let member = format!("outputs/{}", o.name);
            stream.add(&member, T::DESCR, &o.shape, bytes_of(o.values))?;
        }
        stream.add(
            "predictions",
            T::DESCR,
            trace.predictions.shape(),
            bytes_of(&p),
        )?;
        let mut m = serde_json::json!({
            "format": "rnntrace-npz/1",
            "layout": "per-step arrays are time-major: (steps, sequences, units), steps in processing order; each recurrent layer's under its name",
            "precision": crate::trace::precision_of(layers),
            "layers": layers.iter().map(layer_meta).collect::<Vec<_>>(),
        });
        if let (Some(m), serde_json::Value::Object(e)) = (m.as_object_mut(), meta) {
            m.extend(e);
        }
        add_metadata(&mut stream, &m.to_string())?;
        stream.finish()
    }
}
