/*!
`rnntrace explain` as data: the `rnntrace-explain/1` JSON document (schema in the README and issue 14;
methods not asked for are absent, non-finite numbers such as an infinite timescale are `null`) and the
`--save FILE.npz` archive (every array under the same names, float32 or float64 as computed).
*/

use super::explain_table::ExplainReport;
use crate::cell::Real;
use crate::error::Result;
use crate::explain::UnitReport;
use ndarray::{ArrayBase, Data, Dimension};
use serde_json::{Map, Value, json};
use std::path::Path;

fn num<T: Real>(v: T) -> Value {
    let f = v.to_f();
    if f.is_finite() { json!(f) } else { Value::Null }
}

/// A nested JSON array of an n-dimensional array.
fn nested<T: Real, S: Data<Elem = T>, D: Dimension>(a: &ArrayBase<S, D>) -> Value {
    fn go<T: Real>(v: &[T], shape: &[usize]) -> Value {
        match shape {
            [] => num(v[0]),
            [_] => Value::Array(v.iter().map(|&x| num(x)).collect()),
            [n, rest @ ..] => {
                let step = rest.iter().product::<usize>();
                Value::Array(
                    (0..*n)
                        .map(|i| go(&v[i * step..(i + 1) * step], rest))
                        .collect(),
                )
            }
        }
    }
    let flat: Vec<T> = a.iter().copied().collect();
    go(&flat, a.shape())
}

fn floats(v: &[f64]) -> Value {
    Value::Array(v.iter().map(|&x| num(x)).collect())
}

/// One layer's entry of `units`.
pub fn unit_json(u: &UnitReport) -> Value {
    let mut sat = Map::new();
    for s in &u.saturation {
        sat.insert(
            s.gate.into(),
            json!({"left": floats(&s.left), "right": floats(&s.right)}),
        );
    }
    json!({
        "layer": u.layer,
        "saturation": sat,
        "timescale": u.timescale.as_ref().map(|t| json!({
            "data": floats(&t.data),
            "bias": t.bias.as_ref().map(|b| floats(b)),
        })),
        "dead": u.dead,
    })
}

/// The `rnntrace-explain/1` document.
pub fn json<T: Real>(r: &ExplainReport<'_, T>) -> Value {
    let e = r.e;
    let mut attr = Map::new();
    if let Some(a) = &e.gradient {
        attr.insert("gradient".into(), nested(a));
    }
    if let Some(a) = &e.input_x_gradient {
        attr.insert("input_x_gradient".into(), nested(a));
    }
    if let Some(a) = &e.integrated_gradients {
        attr.insert("integrated_gradients".into(), nested(a));
    }
    if let Some(a) = &e.occlusion {
        attr.insert("occlusion".into(), nested(a));
    }
    let mut doc = Map::new();
    doc.insert("format".into(), json!("rnntrace-explain/1"));
    doc.insert("output".into(), json!(r.output));
    doc.insert("methods".into(), json!(r.methods.names()));
    doc.insert("prediction".into(), nested(&e.prediction));
    doc.insert("baseline_prediction".into(), nested(&e.baseline_prediction));
    doc.insert("attributions".into(), Value::Object(attr));
    if let Some(c) = &e.completeness {
        doc.insert("completeness".into(), nested(c));
    }
    doc.insert(
        "initial_state_gradient".into(),
        match &e.initial_state_gradient {
            Some((h, c)) => json!({"h": nested(h), "c": c.as_ref().map(nested)}),
            None => Value::Null,
        },
    );
    doc.insert(
        "units".into(),
        Value::Array(e.units.iter().map(unit_json).collect()),
    );
    Value::Object(doc)
}

/// Writes every array of the explanation to `path` (atomically): `prediction`, `baseline_prediction`,
/// `attributions/<method>`, `completeness`, `initial_state_gradient/h|c`, and per layer k
/// `units/<k>/saturation/<gate>/left|right`, `units/<k>/timescale/data|bias`, `units/<k>/dead`.
pub fn save_npz<T: Real>(r: &ExplainReport<'_, T>, path: &Path) -> Result<()> {
    let e = r.e;
    let mut z = crate::io::npz_writer::NpzStream::new(path)?;
    let add_t = |z: &mut crate::io::npz_writer::NpzStream,
                 name: &str,
                 shape: &[usize],
                 v: Vec<T>| { z.add(name, T::DESCR, shape, T::as_bytes(&v)) };
    add_t(
        &mut z,
        "prediction",
        &[e.prediction.len()],
        e.prediction.to_vec(),
    )?;
    add_t(
        &mut z,
        "baseline_prediction",
        &[e.baseline_prediction.len()],
        e.baseline_prediction.to_vec(),
    )?;
    for (name, a) in [
        ("gradient", &e.gradient),
        ("input_x_gradient", &e.input_x_gradient),
        ("integrated_gradients", &e.integrated_gradients),
    ] {
        if let Some(a) = a {
            add_t(
                &mut z,
                &format!("attributions/{name}"),
                a.shape(),
                a.iter().copied().collect(),
            )?;
        }
    }
    if let Some(a) = &e.occlusion {
        add_t(
            &mut z,
            "attributions/occlusion",
            a.shape(),
            a.iter().copied().collect(),
        )?;
    }
    if let Some(c) = &e.completeness {
        add_t(&mut z, "completeness", &[c.len()], c.to_vec())?;
    }
    if let Some((h, c)) = &e.initial_state_gradient {
        add_t(
            &mut z,
            "initial_state_gradient/h",
            h.shape(),
            h.iter().copied().collect(),
        )?;
        if let Some(c) = c {
            add_t(
                &mut z,
                "initial_state_gradient/c",
                c.shape(),
                c.iter().copied().collect(),
            )?;
        }
    }
    let f8 = |v: &[f64]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    for (k, u) in e.units.iter().enumerate() {
        for s in &u.saturation {
            for (side, v) in [("left", &s.left), ("right", &s.right)] {
                z.add(
                    &format!("units/{k}/saturation/{}/{side}", s.gate),
                    "<f8",
                    &[v.len()],
                    &f8(v),
                )?;
            }
        }
        if let Some(t) = &u.timescale {
            z.add(
                &format!("units/{k}/timescale/data"),
                "<f8",
                &[t.data.len()],
                &f8(&t.data),
            )?;
            if let Some(b) = &t.bias {
                z.add(
                    &format!("units/{k}/timescale/bias"),
                    "<f8",
                    &[b.len()],
                    &f8(b),
                )?;
            }
        }
        let dead: Vec<u8> = u
            .dead
            .iter()
            .flat_map(|&d| (d as i64).to_le_bytes())
            .collect();
        z.add(&format!("units/{k}/dead"), "<i8", &[u.dead.len()], &dead)?;
    }
    z.finish()
}
