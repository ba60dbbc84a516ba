/*!
`rnntrace explain` as data: the `rnntrace-explain/1` JSON document (schema in the README and issue 14;
methods not asked for are absent, non-finite numbers such as an infinite timescale are `null`) and the
`--save FILE.npz` archive (every array under the same names, float32 or float64 as computed). A model
under a float16/bfloat16 dtype policy adds `policy`, `computed_in` and `policy_prediction` (see
[`super::explain_table::PolicyView`]).
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
    if let Some(p) = r.policy {
        // `prediction` (which completeness refers to) is the explained computation's; next to it the
        // model's own answer under its policy.
        doc.insert("policy".into(), json!(p.name()));
        doc.insert("computed_in".into(), json!(r.precision));
        doc.insert(
            "policy_prediction".into(),
            p.prediction.as_ref().map_or(Value::Null, |v| {
                Value::Array(v.iter().map(|&x| num(x)).collect())
            }),
        );
    }
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
    if !e.initial_state_gradients.is_empty() {
        doc.insert(
            "initial_state_gradients".into(),
            Value::Array(
                e.initial_state_gradients
                    .iter()
                    .map(|(l, h, c)| json!({"layer": l, "h": nested(h), "c": c.as_ref().map(nested)}))
                    .collect(),
            ),
        );
    }
    doc.insert(
        "units".into(),
        Value::Array(e.units.iter().map(unit_json).collect()),
    );
    Value::Object(doc)
}

/// How an input's `(batch, steps, features)` attributions are written (JSON and `--save` alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrShape {
    /// As computed: `(batch, steps, features)`.
    Sequence,
    /// A token input, its attribution summed over the embedding: `(batch, steps)`.
    Tokens,
    /// A `(batch, features)` input, explained as one step: `(batch, features)`.
    Flat,
}

impl AttrShape {
    /// The written shape of attributions computed as `shape` (`(batch, steps, features)`).
    pub fn of(self, shape: &[usize]) -> Vec<usize> {
        match (self, shape) {
            (AttrShape::Tokens, [b, t, 1]) => vec![*b, *t],
            (AttrShape::Flat, [b, 1, f]) => vec![*b, *f],
            _ => shape.to_vec(),
        }
    }
}

/// Writes every array of the explanation to `path` (atomically): `prediction`, `baseline_prediction`,
/// (under a dtype policy: `policy` and `computed_in` as strings, `policy_prediction` float32 when known),
/// `attributions/<method>`, `completeness`, `initial_state_gradient/h|c`, per recurrent layer (direction) k
/// `initial_state_gradients/<k>/h|c`, and per layer k
/// `units/<k>/saturation/<gate>/left|right`, `units/<k>/timescale/data|bias`, `units/<k>/dead`.
/// `shape` says how the input's attributions are shaped, as the JSON document shapes them.
pub fn save_npz<T: Real>(r: &ExplainReport<'_, T>, path: &Path, shape: AttrShape) -> Result<()> {
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
    if let Some(p) = r.policy {
        for (name, text) in [
            ("policy", p.name()),
            ("computed_in", r.precision.to_string()),
        ] {
            // A 0-d numpy unicode array (`<U…`: UTF-32 little-endian code points).
            let chars: Vec<u8> = text
                .chars()
                .flat_map(|c| (c as u32).to_le_bytes())
                .collect();
            z.add(name, &format!("<U{}", text.chars().count()), &[], &chars)?;
        }
        if let Some(v) = &p.prediction {
            z.add("policy_prediction", "<f4", &[v.len()], f32::as_bytes(v))?;
        }
    }
    for (name, a) in [
        ("gradient", &e.gradient),
        ("input_x_gradient", &e.input_x_gradient),
        ("integrated_gradients", &e.integrated_gradients),
    ] {
        if let Some(a) = a {
            add_t(
                &mut z,
                &format!("attributions/{name}"),
                &shape.of(a.shape()),
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
    for (k, (_, h, c)) in e.initial_state_gradients.iter().enumerate() {
        for (which, a) in [("h", Some(h)), ("c", c.as_ref())] {
            if let Some(a) = a {
                add_t(
                    &mut z,
                    &format!("initial_state_gradients/{k}/{which}"),
                    a.shape(),
                    a.iter().copied().collect(),
                )?;
            }
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

/// Rows of a report table past which the rest is summarised in one line.
const REPORT_ROWS: usize = 5000;

fn cell(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.6e}")
    } else if v == f64::INFINITY {
        "∞".into()
    } else {
        "—".into()
    }
}

fn capped(mut rows: Vec<Vec<String>>, width: usize) -> Vec<Vec<String>> {
    if rows.len() > REPORT_ROWS {
        let left = rows.len() - REPORT_ROWS;
        rows.truncate(REPORT_ROWS);
        let mut more = vec![String::new(); width];
        more[0] = format!("… {left} more rows: see --save FILE.npz");
        rows.push(more);
    }
    rows
}

/// The explain section of an HTML report: per-unit attributions (`units`: the layer and each unit's
/// share of the explained output's logit, from [`crate::explain::units::head_contributions`]), then
/// tables: the predictions with completeness, `--sequence`'s attributions per step and per feature for
/// every method run, and every layer's saturation, timescales and dead units.
pub fn report_section<T: Real>(
    r: &ExplainReport<'_, T>,
    units: Option<(String, Vec<f64>)>,
) -> crate::render::report::Explain {
    use crate::render::report::{Analysis, Attribution, Explain};
    let e = r.e;
    let mut analyses = Vec::new();
    let mut columns = vec![
        "sequence".to_string(),
        format!("prediction y{}", r.output),
        "baseline prediction".into(),
    ];
    let policy_pred = r
        .policy
        .and_then(|p| Some((p.name(), p.prediction.as_ref()?)));
    if let Some((name, _)) = &policy_pred {
        columns.push(format!("prediction under {name}"));
    }
    if e.completeness.is_some() {
        columns.push("IG completeness (Σ IG − (f(x) − f(b)))".into());
    }
    let rows = (0..e.prediction.len())
        .map(|b| {
            let mut row = vec![
                b.to_string(),
                cell(e.prediction[b].to_f()),
                cell(e.baseline_prediction[b].to_f()),
            ];
            if let Some((_, p)) = &policy_pred {
                row.push(cell(f64::from(p[b])));
            }
            if let Some(c) = &e.completeness {
                row.push(cell(c[b].to_f()));
            }
            row
        })
        .collect();
    let w = columns.len();
    analyses.push(Analysis {
        title: format!(
            "Output {} explained ({}; integrated gradients: {} with {} steps; {})",
            r.output,
            r.methods.names().join(", "),
            r.ig.0.name(),
            r.ig.1,
            match r.policy {
                Some(p) => format!(
                    "{} computation of a model saved under {}: the same weights, no rounding",
                    r.precision,
                    p.name()
                ),
                None => r.precision.to_string(),
            }
        ),
        columns,
        rows: capped(rows, w),
    });
    analyses.extend(input_analyses(r));
    if let Some((columns, rows)) = initial_state_table(e, r.sequence) {
        analyses.push(Analysis {
            title: format!("{}, sequence {}", initial_state_title(r.output), r.sequence),
            columns,
            rows,
        });
    }
    analyses.extend(unit_analyses(e));
    let attributions = match units {
        Some((layer, values)) => {
            analyses.insert(
                1,
                Analysis {
                    title: format!(
                        "Unit attribution ({layer}): h_T[u]·K[u, {}], each unit's share of output {}'s logit, mean over sequences",
                        r.output, r.output
                    ),
                    columns: vec!["unit".into(), "attribution".into()],
                    rows: capped(
                        values
                            .iter()
                            .enumerate()
                            .map(|(u, v)| vec![u.to_string(), cell(*v)])
                            .collect(),
                        2,
                    ),
                },
            );
            vec![Attribution {
                layer,
                values: values.iter().map(|v| v.is_finite().then_some(*v)).collect(),
            }]
        }
        None => Vec::new(),
    };
    Explain {
        attributions,
        analyses,
        inputs: Vec::new(),
        initial_state: None,
    }
}

fn initial_state_title(output: usize) -> String {
    format!(
        "Initial state terms: the gradient of output {output} with respect to each recurrent layer's initial state (the zeros it starts from, or the state an initial_state link gives it), model order; |·| the L2 norm over units"
    )
}

/// One recurrent layer's initial-state gradient: name, h, c.
type StateTerm<T> = (String, ndarray::Array2<T>, Option<ndarray::Array2<T>>);

/// The initial-state terms of sequence `seq`: columns, and per recurrent layer its name, |∂y/∂h0| (L2 over
/// units), the largest |∂y/∂h0ᵢ|, and the same of c0 ("—" for a layer without c) when any layer is an
/// LSTM. `None` when no gradient was taken.
fn initial_state_table<T: Real>(
    e: &crate::explain::Explanation<T>,
    seq: usize,
) -> Option<(Vec<String>, Vec<Vec<String>>)> {
    let first;
    let terms: &[StateTerm<T>] = if e.initial_state_gradients.is_empty() {
        let (h, c) = e.initial_state_gradient.as_ref()?;
        let name = e
            .units
            .first()
            .map_or("recurrent layer", |u| u.layer.as_str());
        first = [(name.to_string(), h.clone(), c.clone())];
        &first
    } else {
        &e.initial_state_gradients
    };
    let lstm = terms.iter().any(|(_, _, c)| c.is_some());
    let mut columns = vec![
        "layer".to_string(),
        "|∂y/∂h0|".into(),
        "max |∂y/∂h0ᵢ|".into(),
    ];
    if lstm {
        columns.extend(["|∂y/∂c0|".into(), "max |∂y/∂c0ᵢ|".into()]);
    }
    let stats = |a: &ndarray::Array2<T>| -> [String; 2] {
        let row = a.row(seq);
        let norm = row.iter().map(|v| v.to_f() * v.to_f()).sum::<f64>().sqrt();
        let largest = row.iter().fold(0.0f64, |m, v| m.max(v.to_f().abs()));
        [cell(norm), cell(largest)]
    };
    let rows = terms
        .iter()
        .filter(|(_, h, _)| seq < h.nrows())
        .map(|(name, h, c)| {
            let mut row = vec![name.clone()];
            row.extend(stats(h));
            if lstm {
                match c {
                    Some(c) => row.extend(stats(c)),
                    None => row.extend(["—".to_string(), "—".to_string()]),
                }
            }
            row
        })
        .collect();
    Some((columns, rows))
}

/// One model input as the report's explain section shows it.
pub struct ReportInput {
    /// The model's name for it.
    pub name: String,
    /// `sequence`, `tokens`, `flat` or `mask` ([`crate::render::report::ExplainInput::kind`]).
    pub kind: &'static str,
    /// A token input: per sequence of the input, each step's token.
    pub step_labels: Option<Vec<Vec<String>>>,
}

/// The explain section for a model with several inputs: the predictions and unit analyses shared, and
/// per input (`inputs`: name and kind, in `reports`' order) its tables and, for the report's
/// `sequences`, its input values and attribution maps for the page's heat map (embedded for every
/// sequence while their count stays within `max_values`, else for `--sequence` only).
pub fn report_section_inputs<T: Real>(
    reports: &[ExplainReport<'_, T>],
    inputs: &[ReportInput],
    sequences: &[usize],
    max_values: usize,
) -> crate::render::report::Explain {
    use crate::render::report::{ExplainInput, ExplainMap};
    let mut shared = report_section(&reports[0], None);
    // The first table (predictions) and the unit tables are shared; the input tables are per input; the
    // initial-state terms are the model's, shown once after the inputs for the page's sequence.
    let per = input_analyses(&reports[0]).len();
    let e0 = reports[0].e;
    let state = initial_state_table(e0, 0).is_some();
    shared.analyses.drain(1..1 + per + usize::from(state));
    if state {
        let columns = initial_state_table(e0, 0)
            .map(|(c, _)| c)
            .unwrap_or_default();
        shared.initial_state = Some(crate::render::report::InitialStateTerms {
            title: initial_state_title(reports[0].output),
            columns,
            rows: sequences
                .iter()
                .map(|&seq| {
                    initial_state_table(e0, seq)
                        .map(|(_, r)| r)
                        .unwrap_or_default()
                })
                .collect(),
        });
    }
    let items = reports
        .iter()
        .zip(inputs)
        .map(|(r, ReportInput { name, kind, step_labels: labels })| {
            let (b, t, f) = r.x.dim();
            let maps = super::explain_table::maps(r.e, 0);
            let per_seq = t * f * (maps.len() + 1);
            let all = per_seq * sequences.len() <= max_values.max(per_seq);
            let kept = |seq: usize| seq < b && (all || seq == r.sequence);
            let note = (!all).then(|| {
                format!(
                    "input '{name}': only sequence {}'s attributions are in the page (the others would pass the report's size limit); see --sequence, --save",
                    r.sequence
                )
            });
            let values = sequences
                .iter()
                .map(|&seq| {
                    kept(seq).then(|| {
                        r.x.slice(ndarray::s![seq, .., ..])
                            .iter()
                            .map(|v| Some(v.to_f()).filter(|v| v.is_finite()))
                            .collect()
                    })
                })
                .collect();
            let maps = maps
                .iter()
                .map(|(method, _)| ExplainMap {
                    method,
                    values: sequences
                        .iter()
                        .map(|&seq| {
                            kept(seq).then(|| {
                                super::explain_table::maps(r.e, seq)
                                    .into_iter()
                                    .find(|(m, _)| m == method)
                                    .map(|(_, a)| {
                                        a.iter()
                                            .map(|v| Some(v.to_f()).filter(|v| v.is_finite()))
                                            .collect()
                                    })
                                    .unwrap_or_default()
                            })
                        })
                        .collect(),
                })
                .collect();
            let step_labels = sequences
                .iter()
                .map(|&seq| {
                    kept(seq).then(|| match labels {
                        Some(l) => l.get(seq).cloned().unwrap_or_default(),
                        None => (0..t).map(|k| k.to_string()).collect(),
                    })
                })
                .collect();
            ExplainInput {
                name: name.clone(),
                kind,
                steps: t,
                feature_names: r.feature_names.clone(),
                step_labels,
                values,
                maps,
                note,
                analyses: input_analyses(r),
            }
        })
        .collect();
    shared.inputs = items;
    shared
}

/// One input's tables for `--sequence`: attributions per step (with the token of a token input), per
/// feature, and the top contributions of every method.
fn input_analyses<T: Real>(r: &ExplainReport<'_, T>) -> Vec<crate::render::report::Analysis> {
    use crate::render::report::Analysis;
    let e = r.e;
    let seq = r.sequence;
    let mut analyses = Vec::new();
    // Per step and per feature, for the chosen sequence.
    let maps = super::explain_table::maps(e, seq);
    let occl = e.occlusion.as_ref().map(|o| o.row(seq));
    let (t, f) = (r.x.dim().1, r.x.dim().2);
    let mut columns = vec!["step (input row)".to_string()];
    columns.extend(maps.iter().map(|(n, _)| format!("{n} (Σ features)")));
    if occl.is_some() {
        columns.push("occlusion".into());
    }
    if r.mask.is_some() {
        columns.push("masked".into());
    }
    let rows = (0..t)
        .map(|ti| {
            let mut row = vec![match r.step_labels.as_ref().and_then(|l| l.get(ti)) {
                Some(label) => format!("{ti} · {label}"),
                None => ti.to_string(),
            }];
            row.extend(
                maps.iter()
                    .map(|(_, m)| cell(m.row(ti).iter().map(|v| v.to_f()).sum())),
            );
            if let Some(o) = &occl {
                row.push(cell(o[ti].to_f()));
            }
            if let Some(m) = r.mask {
                row.push(if m[[seq, ti]] { "" } else { "masked" }.into());
            }
            row
        })
        .collect();
    let w = columns.len();
    analyses.push(Analysis {
        title: format!("Attribution per step, sequence {seq}"),
        columns,
        rows: capped(rows, w),
    });
    if !maps.is_empty() {
        let mut columns = vec!["feature".to_string()];
        columns.extend(maps.iter().map(|(n, _)| format!("{n} (Σ steps)")));
        let rows = (0..f)
            .map(|j| {
                let mut row = vec![r.feature_names.get(j).cloned().unwrap_or_default()];
                row.extend(
                    maps.iter()
                        .map(|(_, m)| cell(m.column(j).iter().map(|v| v.to_f()).sum())),
                );
                row
            })
            .collect();
        let w = columns.len();
        analyses.push(Analysis {
            title: format!("Attribution per feature, sequence {seq}"),
            columns,
            rows: capped(rows, w),
        });
    }
    for (name, m) in &maps {
        let mut cells: Vec<(usize, usize, f64)> = m
            .indexed_iter()
            .map(|((ti, j), v)| (ti, j, v.to_f()))
            .collect();
        cells.sort_by(|a, b| b.2.abs().total_cmp(&a.2.abs()));
        let what = if r.step_labels.is_some() {
            "token"
        } else {
            "feature"
        };
        let rows: Vec<Vec<String>> = cells
            .iter()
            .take(r.top)
            .enumerate()
            .map(|(k, (ti, j, v))| {
                vec![
                    (k + 1).to_string(),
                    ti.to_string(),
                    match &r.step_labels {
                        Some(l) => l.get(*ti).cloned().unwrap_or_default(),
                        None => r.feature_names.get(*j).cloned().unwrap_or_default(),
                    },
                    cell(*v),
                ]
            })
            .collect();
        analyses.push(Analysis {
            title: format!("Top {} contributions ({name}), sequence {seq}", rows.len()),
            columns: vec![
                "rank".into(),
                "step".into(),
                what.into(),
                (*name).to_string(),
            ],
            rows,
        });
    }
    analyses
}

/// Every recurrent layer's saturation, timescales and dead units.
fn unit_analyses(
    units: &crate::explain::Explanation<impl Real>,
) -> Vec<crate::render::report::Analysis> {
    use crate::render::report::Analysis;
    let e = units;
    let mut analyses = Vec::new();
    for u in &e.units {
        let mut columns = vec!["unit".to_string()];
        for s in &u.saturation {
            columns.push(format!("{} < 0.1", s.gate));
            columns.push(format!("{} > 0.9", s.gate));
        }
        if let Some(ts) = &u.timescale {
            columns.push(format!("timescale from {} (data, steps)", ts.gate));
            if ts.bias.is_some() {
                columns.push("timescale (bias, steps)".into());
            }
        }
        columns.push("dead".into());
        let rows = (0..u.units)
            .map(|k| {
                let mut row = vec![k.to_string()];
                for s in &u.saturation {
                    row.push(format!("{:.1}%", s.left[k] * 100.0));
                    row.push(format!("{:.1}%", s.right[k] * 100.0));
                }
                if let Some(ts) = &u.timescale {
                    row.push(cell(ts.data[k]));
                    if let Some(b) = &ts.bias {
                        row.push(cell(b[k]));
                    }
                }
                row.push(if u.dead.contains(&k) { "dead" } else { "" }.into());
                row
            })
            .collect();
        let w = columns.len();
        analyses.push(Analysis {
            title: format!(
                "Units of {}: saturation, timescales, dead ({} dead of {})",
                u.layer,
                u.dead.len(),
                u.units
            ),
            columns,
            rows: capped(rows, w),
        });
    }
    analyses
}
