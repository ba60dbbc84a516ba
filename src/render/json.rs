/*!
The JSON trace, schema `rnntrace-trace/1` (documented in the README). Written straight from the trace
arrays with serde, without building an intermediate document. Non-finite numbers are written as `null`.
*/

use super::Report;
use crate::cell::Real;
use crate::trace::LayerTrace;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// The schema identifier written in `format`.
pub const FORMAT: &str = "rnntrace-trace/1";

/// Writes the trace as JSON (compact, one document, trailing newline).
pub fn write<T: Real>(report: &Report<'_, T>, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, &Doc(report)).map_err(std::io::Error::from)?;
    out.write_all(b"\n")
}

struct Doc<'r, 'a, T>(&'r Report<'a, T>);
struct Layer<'a, T>(&'a LayerTrace<T>);
struct Sequences<'a, T>(&'a LayerTrace<T>);
struct Sequence<'a, T>(&'a LayerTrace<T>, usize);
struct Steps<'a, T>(&'a LayerTrace<T>, usize);
struct Step<'a, T>(&'a LayerTrace<T>, usize, usize);
struct Gates<'a, T>(&'a LayerTrace<T>, usize, usize, bool);
struct Vector<I>(I);
struct Rows<'a, T>(&'a ndarray::Array2<T>);
struct State<'a, T> {
    h: ndarray::ArrayView1<'a, T>,
    c: Option<ndarray::ArrayView1<'a, T>>,
}

impl<T: Real> Serialize for State<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("h", &Vector(self.h.iter()))?;
        if let Some(c) = &self.c {
            m.serialize_entry("c", &Vector(c.iter()))?;
        }
        m.end()
    }
}

impl<T: Real> Serialize for Doc<'_, '_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("format", FORMAT)?;
        m.serialize_entry("precision", &crate::trace::precision_of(&r.trace.layers))?;
        m.serialize_entry(
            "layers",
            &r.trace.layers.iter().map(Layer).collect::<Vec<_>>(),
        )?;
        m.serialize_entry(
            "dense_activation",
            &r.trace.dense_activation.map(|a| a.name()),
        )?;
        m.serialize_entry("predictions", &Rows(&r.trace.predictions))?;
        m.serialize_entry("expected", &r.expected.as_ref().map(Rows))?;
        m.serialize_entry("targets", &r.targets.as_ref().map(Rows))?;
        m.serialize_entry("comparison", &r.comparison.as_ref().map(comparison))?;
        if !r.outputs.is_empty() {
            // A model with several outputs: each one whole (values in C order), with its comparison.
            let outs: Vec<serde_json::Value> = r
                .outputs
                .iter()
                .map(|o| {
                    serde_json::json!({"name": o.name, "shape": o.shape,
                        "values": o.values.iter().map(|v| finite(*v)).collect::<Vec<_>>(),
                        "comparison": o.comparison.as_ref().map(comparison)})
                })
                .collect();
            m.serialize_entry("outputs", &outs)?;
        }
        m.end()
    }
}

fn comparison(c: &crate::compare::Comparison) -> serde_json::Value {
    serde_json::json!({"max_abs_error": finite(c.max_abs_error), "atol": c.atol, "rtol": c.rtol,
        "mismatches": c.mismatches, "passed": c.passed, "worst_index": c.worst_index,
        "worst_ours": finite(c.worst_ours), "worst_expected": finite(c.worst_expected),
        "tolerance": c.tolerance})
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

impl<T: Real> Serialize for Layer<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let l = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", &l.name)?;
        m.serialize_entry("cell", l.kind.name())?;
        if let Some(p) = l.policy {
            m.serialize_entry("dtype_policy", p.name())?;
            m.serialize_entry("precision", &p.describe())?;
        }
        m.serialize_entry("units", &l.units)?;
        m.serialize_entry("features", &l.features)?;
        m.serialize_entry("activation", l.activation.name())?;
        let ra =
            (l.kind != crate::weights::CellKind::SimpleRnn).then(|| l.recurrent_activation.name());
        m.serialize_entry("recurrent_activation", &ra)?;
        m.serialize_entry("reset_after", &l.reset_after)?;
        m.serialize_entry("go_backwards", &l.go_backwards)?;
        m.serialize_entry("carry_state", &l.carry_state)?;
        m.serialize_entry("sequences", &Sequences(l))?;
        m.end()
    }
}

impl<T: Real> Serialize for Sequences<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.0.sequences();
        let mut q = s.serialize_seq(Some(n))?;
        for b in 0..n {
            q.serialize_element(&Sequence(self.0, b))?;
        }
        q.end()
    }
}

impl<T: Real> Serialize for Sequence<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (l, b) = (self.0, self.1);
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("index", &b)?;
        let c0 = l.c0.as_ref().map(|c| c.row(b));
        m.serialize_entry(
            "initial_state",
            &State {
                h: l.h0.row(b),
                c: c0,
            },
        )?;
        m.serialize_entry("steps", &Steps(l, b))?;
        m.end()
    }
}

impl<T: Real> Serialize for Steps<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.0.steps();
        let mut q = s.serialize_seq(Some(n))?;
        for t in 0..n {
            q.serialize_element(&Step(self.0, self.1, t))?;
        }
        q.end()
    }
}

impl<T: Real> Serialize for Step<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (l, b, t) = (self.0, self.1, self.2);
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("t", &t)?;
        m.serialize_entry("input_index", &l.input_index[t])?;
        m.serialize_entry("x", &Vector(l.x_at(b, t).iter()))?;
        m.serialize_entry("masked", &l.is_masked(b, t))?;
        m.serialize_entry("gates", &Gates(l, b, t, false))?;
        m.serialize_entry("pre", &Gates(l, b, t, true))?;
        let c = l.c_at(b, t);
        m.serialize_entry("state", &State { h: l.h_at(b, t), c })?;
        m.serialize_entry("output", &Vector(l.out_at(b, t).iter()))?;
        m.end()
    }
}

impl<T: Real> Serialize for Gates<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (l, b, t, pre) = (self.0, self.1, self.2, self.3);
        let mut m = s.serialize_map(None)?;
        for (k, name) in l.kind.gate_names().iter().enumerate() {
            let v = if pre {
                l.pre_gate(b, t, k)
            } else {
                l.gate(b, t, k)
            };
            m.serialize_entry(name, &Vector(v.iter()))?;
        }
        m.end()
    }
}

impl<'a, T: Real, I: Iterator<Item = &'a T> + Clone> Serialize for Vector<I> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.clone().map(|v| finite(v.to_f()).map(|_| *v)))
    }
}

impl<T: Real> Serialize for Rows<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut q = s.serialize_seq(Some(self.0.nrows()))?;
        for row in self.0.rows() {
            q.serialize_element(&Vector(row.iter()))?;
        }
        q.end()
    }
}
