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
| `input` | (B, T, F) | always |
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
    gates: Vec<ArrayId>,
    pre: Vec<ArrayId>,
    h: Option<ArrayId>,
    c: Option<ArrayId>,
    out: Option<ArrayId>,
    masked: Option<ArrayId>,
    _t: std::marker::PhantomData<T>,
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
        let (b, t, u) = (run.sequences, run.steps, run.units);
        let shape = [t, b, u];
        // h and the output have the projection's width for a proj_size LSTM.
        let h_shape = [t, b, run.h_units];
        let names = run.kind.gate_names();
        let mut gates = Vec::new();
        let mut pre = Vec::new();
        if record.gates {
            for g in names {
                gates.push(stream.declare(&format!("gates/{g}"), T::DESCR, &shape, T::BYTES)?);
            }
        }
        if record.pre {
            for g in names {
                pre.push(stream.declare(&format!("pre/{g}"), T::DESCR, &shape, T::BYTES)?);
            }
        }
        let masking = run.masked;
        let (mut h, mut c, mut out) = (None, None, None);
        if record.states {
            h = Some(stream.declare("state/h", T::DESCR, &h_shape, T::BYTES)?);
            if run.kind.has_cell_state() {
                c = Some(stream.declare("state/c", T::DESCR, &shape, T::BYTES)?);
            }
            if masking {
                out = Some(stream.declare("output", T::DESCR, &h_shape, T::BYTES)?);
            }
        }
        let masked = if masking {
            Some(stream.declare("masked", "|b1", &[t, b], 1)?)
        } else {
            None
        };
        Ok(TraceNpz {
            stream,
            gates,
            pre,
            h,
            c,
            out,
            masked,
            _t: std::marker::PhantomData,
        })
    }

    /// Appends one block of steps.
    pub fn write_block(&mut self, s: &Stores<T>) -> Result<()> {
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
        self.stream.append_all(&parts)
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
        let mut add = |name: &str, a: Vec<T>, shape: &[usize]| {
            stream.add(name, T::DESCR, shape, bytes_of(&a))
        };
        add(
            "predictions",
            trace.predictions.iter().copied().collect(),
            trace.predictions.shape(),
        )?;
        add(
            "last_output",
            l.last_output.iter().copied().collect(),
            l.last_output.shape(),
        )?;
        add(
            "initial_state/h",
            l.h0.iter().copied().collect(),
            l.h0.shape(),
        )?;
        add(
            "final_state/h",
            l.final_h.iter().copied().collect(),
            l.final_h.shape(),
        )?;
        if let (Some(c0), Some(fc)) = (&l.c0, &l.final_c) {
            add("initial_state/c", c0.iter().copied().collect(), c0.shape())?;
            add("final_state/c", fc.iter().copied().collect(), fc.shape())?;
        }
        let idx: Vec<u8> = l
            .input_index
            .iter()
            .flat_map(|&i| (i as i64).to_le_bytes())
            .collect();
        stream.add("input_index", "<i8", &[l.input_index.len()], &idx)?;
        let meta = serde_json::json!({
            "format": "rnntrace-npz/1",
            "layout": "per-step arrays are time-major: (steps, sequences, units), steps in processing order",
            "name": l.name, "cell": l.kind.name(), "units": l.units, "features": l.features,
            "activation": l.activation.name(), "recurrent_activation": l.recurrent_activation.name(),
            "reset_after": l.reset_after, "go_backwards": l.go_backwards, "carry_state": l.carry_state,
            "precision": T::NAME, "gates": l.kind.gate_names(), "kernels": l.kernels.name(),
            "dense_activation": trace.dense_activation.map(|a| a.name()),
            "comparison": comparison,
            "window": window,
        })
        .to_string();
        // A 0-d unicode array (UTF-32 code units).
        let chars: Vec<u8> = meta
            .chars()
            .flat_map(|ch| (ch as u32).to_le_bytes())
            .collect();
        stream.add(
            "metadata",
            &format!("<U{}", meta.chars().count()),
            &[],
            &chars,
        )?;
        stream.finish()
    }
}
