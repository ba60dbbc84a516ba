/*!
The diagnosis: a paragraph naming what differs and how to fix it, the ranking (table or JSON), the
command that reproduces the output, and the rewritten weights (`--write-weights`).
*/

#[allow(unused_imports)]
use super::*;

/// Writes weights in Keras layout as a JSON object {kernel, recurrent_kernel, bias} (values exact).
pub(super) fn write_weights(path: &Path, w: &CellWeights<f64>) -> Result<()> {
    let rows =
        |a: &Array2<f64>| -> Vec<Vec<f64>> { a.rows().into_iter().map(|r| r.to_vec()).collect() };
    let gu = w.kernel.ncols();
    let zeros = || vec![0.0; gu];
    let mut obj = json!({
        "kernel": rows(&w.kernel),
        "recurrent_kernel": rows(&w.recurrent_kernel),
    });
    let bias = match (
        &w.bias,
        &w.recurrent_bias,
        w.kind.has_reset_after() && w.reset_after,
    ) {
        (None, None, _) => None,
        (b, r, true) => Some(json!([
            b.as_ref().map_or_else(zeros, |b| b.to_vec()),
            r.as_ref().map_or_else(zeros, |r| r.to_vec())
        ])),
        (b, _, false) => Some(json!(b.as_ref().map_or_else(zeros, |b| b.to_vec()))),
    };
    if let (Some(b), Value::Object(m)) = (bias, &mut obj) {
        m.insert("bias".into(), b);
    }
    atomic_write(path, |out| {
        serde_json::to_writer(&mut *out, &obj).map_err(std::io::Error::from)?;
        writeln!(out)
    })
}

/// Everything the report shows.
pub(super) struct Diagnosis<'a> {
    pub(super) ctx: &'a Search,
    pub(super) a: &'a DiagnoseArgs,
    pub(super) finals: &'a [Scored],
    pub(super) best: Scored,
    pub(super) user: Option<Scored>,
    pub(super) divergence: Option<Divergence>,
    pub(super) searched: usize,
    pub(super) evaluated: usize,
    pub(super) tiers: usize,
    pub(super) seconds: f64,
}

pub(super) fn num(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

pub(super) fn short(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e-3 && v.abs() < 1e4 {
        format!("{}", (v * 1e4).round() / 1e4)
    } else {
        format!("{v:.2e}")
    }
}

impl Diagnosis<'_> {
    pub(super) fn kind(&self) -> CellKind {
        self.ctx.p.kind
    }

    pub(super) fn settings_json(&self, s: &Settings) -> serde_json::Map<String, Value> {
        let v = json!({
            "activation": s.activation.name(),
            "recurrent_activation": s.recurrent_activation.name(),
            "reset_after": s.reset_after,
            "go_backwards": s.go_backwards,
            "gate_order": convention::order_letters(self.kind(), &s.order),
            "carry_state": s.carry_state,
            "dense_activation": s.dense_activation.map(|a| a.name()),
            "transposed": s.transposed,
            "gru_update": if s.textbook { "textbook" } else { "keras" },
        });
        match v {
            Value::Object(m) => m,
            _ => unreachable!("an object literal"),
        }
    }

    pub(super) fn cand_json(&self, sc: &Scored) -> Value {
        let s = self.ctx.settings(&sc.c);
        let mut m = self.settings_json(&s);
        m.insert("max_abs_error".into(), num(sc.err));
        m.insert("matches".into(), json!(sc.passed));
        m.insert("sequences_compared".into(), json!(sc.rows));
        m.insert(
            "differs_from_yours".into(),
            json!(s.differences(&self.ctx.user)),
        );
        Value::Object(m)
    }

    pub(super) fn json(&self) -> Value {
        let mut yours = self.settings_json(&self.ctx.user);
        yours.insert("runnable".into(), json!(self.ctx.user_error.is_none()));
        yours.insert("error".into(), json!(self.ctx.user_error));
        yours.insert(
            "max_abs_error".into(),
            num(self.user.map_or(f64::NAN, |u| u.err)),
        );
        yours.insert("matches".into(), json!(self.user.is_some_and(|u| u.passed)));
        let rerun = self.rerun(&self.ctx.settings(&self.best.c));
        json!({
            "format": "rnntrace-diagnose/1",
            "cell": self.kind().name(),
            "sequences": self.ctx.p.x.shape()[0],
            "values_compared": self.ctx.p.expected.len(),
            "atol": self.ctx.p.atol,
            "rtol": self.ctx.p.rtol,
            "searched": self.searched,
            "evaluated_on_all_sequences": self.evaluated,
            "best": self.cand_json(&self.best),
            "yours": Value::Object(yours),
            "candidates": self.finals.iter().take(LISTED).map(|s| self.cand_json(s)).collect::<Vec<_>>(),
            "first_divergence": self.divergence.as_ref().map(|d| json!({
                "sequence": d.sequence,
                "step": d.step,
                "gate": d.gate,
                "unit": d.unit,
                "ours": num(d.ours),
                "best": num(d.best),
                "input_index": d.input_index.map(|(u, b)| json!({"ours": u, "best": b})),
            })),
            "rerun": {
                "command": rerun.0,
                "flags": rerun.1.iter().flat_map(|f| f.split(' ')).collect::<Vec<_>>(),
                "weights_converted": rerun.2,
            },
            "advice": self.advice(),
        })
    }

    /// One clause per setting in which the best candidate differs from the user's flags.
    pub(super) fn clause(&self, field: Field, b: &Settings, u: &Settings) -> String {
        let kind = self.kind();
        match field {
            Field::RecurrentActivation => match (b.recurrent_activation, u.recurrent_activation) {
                (Activation::HardSigmoidKeras2, _) => "your file was saved by Keras 2 (tf-keras, or Keras 2.0–2.2, whose default recurrent_activation was hard_sigmoid): its hard_sigmoid is clip(0.2x + 0.5, 0, 1), not Keras 3's relu6(x + 3)/6".into(),
                (Activation::HardSigmoid, Activation::HardSigmoidKeras2) => "the model is a Keras 3 one: its hard_sigmoid is relu6(x + 3)/6 = clip(x/6 + 0.5, 0, 1), not Keras 2's clip(0.2x + 0.5, 0, 1)".into(),
                (bb, uu) => format!(
                    "the gates use recurrent_activation {}, not {}",
                    bb.name(),
                    uu.name()
                ),
            },
            Field::Activation => format!(
                "the layer's activation ({}) is {}, not {}",
                if kind.has_cell_state() {
                    "candidate and cell output"
                } else {
                    "candidate"
                },
                b.activation.name(),
                u.activation.name()
            ),
            Field::GateOrder => {
                let who = |o: &[usize]| {
                    convention::order_name(kind, o)
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                };
                format!(
                    "the file stores the gate blocks in {} order{}, not {}{}",
                    convention::order_letters(kind, &b.order),
                    who(&b.order),
                    convention::order_letters(kind, &u.order),
                    who(&u.order)
                )
            }
            Field::Transposed => {
                if b.transposed && self.ctx.stored.recurrent_transposed {
                    "both kernels are stored transposed, (gates·units, inputs) as PyTorch stores weight_ih and weight_hh".into()
                } else if b.transposed {
                    "the input kernel is stored transposed, (gates·units, features) as PyTorch stores weight_ih".into()
                } else {
                    "the input kernel is stored (features, gates·units), as Keras stores it".into()
                }
            }
            Field::ResetAfter => {
                let how = match (&self.ctx.stored.bias, b.reset_after) {
                    (StoredBias::Single(_), Some(true)) => {
                        " (its (3u,) bias being the input bias, with no recurrent bias)"
                    }
                    (StoredBias::Double(..), Some(false)) => {
                        " (its input and recurrent biases added into one)"
                    }
                    _ => "",
                };
                if b.reset_after == Some(true) {
                    format!(
                        "the GRU is reset_after=True (Keras 3's and PyTorch's form: the reset gate multiplies h·U + b after the product){how}"
                    )
                } else {
                    format!(
                        "the GRU is reset_after=False (Keras 2.2's and TF1's form: the reset gate multiplies h before the product){how}"
                    )
                }
            }
            Field::GruUpdate => {
                if b.textbook {
                    "the output follows the textbook GRU update h = (1−z)⊙h_prev + z⊙h̃, not Keras's h = z⊙h_prev + (1−z)⊙h̃".into()
                } else {
                    "the output follows Keras's GRU update h = z⊙h_prev + (1−z)⊙h̃, not the textbook one".into()
                }
            }
            Field::GoBackwards => {
                if b.go_backwards {
                    "the layer reads each sequence last step first (go_backwards=True, as the backward half of a Bidirectional does)".into()
                } else {
                    "the layer reads each sequence in time order (go_backwards=False)".into()
                }
            }
            Field::CarryState => {
                if b.carry_state {
                    "the layer is stateful: each sequence starts from the previous one's final state".into()
                } else {
                    "every sequence starts from zero state, as model.predict does on a stateless layer".into()
                }
            }
            Field::DenseActivation => format!(
                "the Dense head applies {}, not {}",
                b.dense_activation.map_or("nothing", |a| a.name()),
                u.dense_activation.map_or("nothing", |a| a.name())
            ),
        }
    }

    /// How to reproduce `s` with `rnntrace lstm/gru`: the whole command, its convention flags, and whether
    /// the weights must be rewritten first (`--write-weights`).
    pub(super) fn rerun(&self, s: &Settings) -> (String, Vec<String>, bool) {
        let st = &self.ctx.stored;
        let a = self.a;
        let convert = s.order != st.default_order()
            || s.transposed != st.default_transposed()
            || s.textbook
            || matches!(
                (&st.bias, s.reset_after),
                (StoredBias::Single(_), Some(true)) | (StoredBias::Double(..), Some(false))
            );
        let mut flags: Vec<String> = Vec::new();
        if s.activation != Activation::Tanh {
            flags.push(format!("--activation {}", s.activation.name()));
        }
        if s.recurrent_activation != Activation::Sigmoid {
            flags.push(format!(
                "--recurrent-activation {}",
                s.recurrent_activation.name()
            ));
        }
        if let Some(ra) = s.reset_after {
            // What `--reset-after auto` reads from the bias that will be passed.
            let auto = match (&st.bias, convert) {
                (StoredBias::None, _) => true,
                (_, true) => ra,
                (StoredBias::Single(_), false) => false,
                (StoredBias::Double(..), false) => true,
            };
            if auto != ra {
                flags.push(format!("--reset-after {ra}"));
            }
        }
        if s.go_backwards {
            flags.push("--go-backwards".into());
        }
        if s.carry_state {
            flags.push("--carry-state".into());
        }
        if let Some(d) = s.dense_activation.filter(|&d| d != Activation::Linear) {
            flags.push(format!("--dense-activation {}", d.name()));
        }
        let q = |p: &Path| {
            let s = p.display().to_string();
            if s.contains(' ') { format!("'{s}'") } else { s }
        };
        let weights = match (&a.write_weights, convert) {
            (Some(w), true) => q(w),
            (None, true) => "fixed.json".into(),
            _ => q(&a.weights),
        };
        let mut cmd = format!(
            "rnntrace {} --weights {weights} --input {}",
            self.kind().name(),
            q(&a.input)
        );
        if let Some(k) = a.window {
            cmd += &format!(" --window {k}");
        }
        if let Some(v) = a.mask_value {
            cmd += &format!(" --mask-value {v}");
        }
        if let Some(d) = &a.dense {
            cmd += &format!(" --dense {}", q(d));
        }
        cmd += &format!(" --expected {}", q(&a.expected));
        for f in &flags {
            cmd += " ";
            cmd += f;
        }
        (cmd, flags, convert)
    }

    pub(super) fn advice(&self) -> String {
        let ctx = self.ctx;
        let best = ctx.settings(&self.best.c);
        let n = ctx.p.expected.len();
        let tol = format!("atol {:e} + rtol {:e}", ctx.p.atol, ctx.p.rtol);
        let diffs = best.differences(&ctx.user);
        let mut clauses: Vec<String> = diffs
            .iter()
            .map(|f| self.clause(*f, &best, &ctx.user))
            .collect();
        if ctx.stored.layout == Layout::Keras
            && ctx.stored.recurrent_transposed
            && !(best.transposed && diffs.contains(&Field::Transposed))
        {
            // Not a choice (the shape allows nothing else), but the reason the user's flags cannot run.
            clauses.push(
                "the recurrent kernel is stored transposed, (gates·units, units) as PyTorch stores weight_hh"
                    .into(),
            );
        }
        let joined = match clauses.len() {
            0 => String::new(),
            1 => clauses[0].clone(),
            _ => format!(
                "{}; and {}",
                clauses[..clauses.len() - 1].join("; "),
                clauses[clauses.len() - 1]
            ),
        };
        let mut out = String::new();
        if !self.best.passed {
            out += &format!(
                "No convention among the {} searched reproduces the expected output within {tol}. ",
                self.searched
            );
            if diffs.is_empty() {
                out += &format!(
                    "The closest is your own setting, still off by up to {}. ",
                    short(self.best.err)
                );
            } else {
                let what = diffs
                    .iter()
                    .map(|f| field_value(self.kind(), *f, &best))
                    .collect::<Vec<_>>()
                    .join(", ");
                out += &format!(
                    "The closest ({what}) is still off by up to {}{}. ",
                    short(self.best.err),
                    match &self.user {
                        Some(u) => format!("; your flags by {}", short(u.err)),
                        None => String::new(),
                    }
                );
            }
            out += "The weights, input and expected output may not belong together (another checkpoint, \
                    different scaling or --window), or the model does something this search does not vary: \
                    masking other than --mask-value, an initial state, layers before this one, a head other \
                    than one Dense layer.";
            return out;
        }
        if clauses.is_empty() && ctx.user_error.is_none() {
            out += &format!(
                "Your flags reproduce the expected output: largest error {} over {n} values, within {tol}.",
                short(self.best.err)
            );
            let alts: Vec<String> = self
                .finals
                .iter()
                .skip(1)
                .filter(|s| s.passed)
                .take(3)
                .map(|s| {
                    let st = ctx.settings(&s.c);
                    let what = st
                        .differences(&ctx.user)
                        .iter()
                        .map(|f| field_value(self.kind(), *f, &st))
                        .collect::<Vec<_>>()
                        .join(", ");
                    match s.rows {
                        r if r == ctx.p.x.shape()[0] => what,
                        1 => format!("{what} (on sequence 0)"),
                        r => format!("{what} (on the first {r} sequences)"),
                    }
                })
                .collect();
            if !alts.is_empty() {
                out += &format!(
                    " These data fit some other settings equally well, so they cannot confirm every flag: {}.",
                    alts.join("; ")
                );
            }
            return out;
        }
        let mut first = if clauses.is_empty() {
            "your flags state the right conventions".to_string()
        } else {
            joined
        };
        if let Some(c) = first.get(0..1) {
            first = c.to_uppercase() + &first[1..];
        }
        out += &format!(
            "{first}. With that, the expected output is reproduced: largest error {} over {n} values, within {tol}. ",
            short(self.best.err)
        );
        let (cmd, rerun_flags, convert) = self.rerun(&best);
        if convert {
            let extra = if best.textbook {
                " (rnntrace computes Keras's update, so the z block is stored negated: σ(−x) = 1 − σ(x), and the z the trace shows is 1 − your z)"
            } else {
                ""
            };
            match &self.a.write_weights {
                Some(w) => {
                    out += &format!(
                        "rnntrace reads weights in Keras's layout; the converted weights were written to {}{extra}: rerun with `{cmd}`.",
                        w.display()
                    )
                }
                None => {
                    out += &format!(
                        "rnntrace reads weights in Keras's layout: add --write-weights fixed.json to this command to write them converted{extra}, then rerun with `{cmd}`."
                    )
                }
            }
        } else {
            let mut flags: Vec<String> = diffs.iter().filter_map(|f| flag_for(*f, &best)).collect();
            if diffs.contains(&Field::ResetAfter) {
                flags.push(
                    rerun_flags
                        .iter()
                        .find(|f| f.starts_with("--reset-after"))
                        .cloned()
                        .unwrap_or_else(|| "no --reset-after (auto reads the bias)".into()),
                );
            }
            if flags.is_empty() {
                out += &format!("Rerun: `{cmd}`.");
            } else {
                out += &format!("Rerun with {}: `{cmd}`.", flags.join(" "));
            }
        }
        match (&self.ctx.user_error, &self.divergence, &self.user) {
            (Some(e), _, _) => {
                out += &format!(" With your flags rnntrace cannot read these weights: {e}.")
            }
            (None, Some(d), Some(u)) => {
                let place = match d.step {
                    Some(t) => format!("step {t}, {}", gate_label(&d.gate)),
                    None => format!("the {} head", d.gate),
                };
                out += &format!(
                    " Your flags (largest error {}) first depart from it at sequence {}, {place}, unit {}: yours {}, best {}.",
                    short(u.err),
                    d.sequence,
                    d.unit,
                    short(d.ours),
                    short(d.best)
                );
            }
            (None, None, Some(u)) => {
                out += &format!(" Your flags: largest error {}.", short(u.err));
            }
            _ => {}
        }
        out
    }

    /// The diagnosis as prose wrapped at `width` columns, with every command meant for copying on a line
    /// of its own, whole and indented (never wrapped), then the ranking.
    pub(super) fn text(&self, width: usize) -> String {
        let ctx = self.ctx;
        let mut out = String::new();
        let mut prose = String::new();
        let flush = |prose: &mut String, out: &mut String| {
            let p = prose.trim().trim_start_matches(['.', ':']).trim();
            if !p.is_empty() {
                *out += &crate::render::text::wrap(p, width, 0);
            }
            prose.clear();
        };
        for (i, part) in self.advice().split('`').enumerate() {
            if i % 2 == 1 && part.starts_with("rnntrace ") {
                flush(&mut prose, &mut out);
                out += &format!("\n\n    {part}\n\n");
            } else if i % 2 == 1 {
                prose += &format!("`{part}`");
            } else {
                prose += part;
            }
        }
        flush(&mut prose, &mut out);
        let mut out = out.trim_end().to_string();
        out += "\n\n";
        let batch = ctx.p.x.shape()[0];
        let heading = format!(
            "Ranking ({} candidates searched{}; largest |ours − expected|, on all {batch} sequences unless marked):",
            self.searched,
            if self.tiers == 2 { ", both tiers" } else { "" },
        );
        out += &crate::render::text::wrap(&heading, width, 2);
        out += "\n";
        let row = |label: String, s: &Scored, what: String| {
            let on = if s.rows == batch {
                String::new()
            } else if s.rows == 1 {
                " [on sequence 0]".to_string()
            } else {
                format!(" [on the first {} sequences]", s.rows)
            };
            // The description wraps under itself, clear of the number columns.
            const LEAD: usize = 31;
            let what = crate::render::text::wrap(
                &format!("{what}{on}"),
                width.saturating_sub(LEAD).max(20),
                0,
            )
            .replace('\n', &format!("\n{}", " ".repeat(LEAD)));
            format!(
                "  {label:>5}  {:>10}  {:<8}  {what}\n",
                short(s.err),
                if s.passed { "match" } else { "no match" }
            )
        };
        for (i, s) in self.finals.iter().take(SHOWN).enumerate() {
            let st = ctx.settings(&s.c);
            let d = st.differences(&ctx.user);
            let what = if d.is_empty() {
                "your flags".to_string()
            } else {
                d.iter()
                    .map(|f| field_value(self.kind(), *f, &st))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out += &row(format!("{}", i + 1), s, what);
        }
        let shown = self
            .finals
            .iter()
            .take(SHOWN)
            .any(|s| Some(s.c) == ctx.user_cand);
        match (&self.user, &ctx.user_error) {
            (Some(_), _) if shown => {}
            (Some(u), _) => {
                out += &row("yours".into(), u, describe(self.kind(), &ctx.user));
            }
            (None, Some(e)) => out += &format!("  yours: not runnable: {e}\n"),
            _ => {}
        }
        out += &format!("Searched in {:.2} s.\n", self.seconds);
        out
    }
}

/// How a field of `s` reads in the ranking: `recurrent_activation hard_sigmoid_keras2`.
pub(super) fn field_value(kind: CellKind, field: Field, s: &Settings) -> String {
    match field {
        Field::RecurrentActivation => {
            format!("recurrent_activation {}", s.recurrent_activation.name())
        }
        Field::Activation => format!("activation {}", s.activation.name()),
        Field::GateOrder => format!("gate_order {}", convention::order_letters(kind, &s.order)),
        Field::Transposed => format!("transposed {}", s.transposed),
        Field::ResetAfter => format!("reset_after {}", s.reset_after.unwrap_or(false)),
        Field::GruUpdate => format!(
            "gru_update {}",
            if s.textbook { "textbook" } else { "keras" }
        ),
        Field::GoBackwards => format!("go_backwards {}", s.go_backwards),
        Field::CarryState => format!("carry_state {}", s.carry_state),
        Field::DenseActivation => format!(
            "dense_activation {}",
            s.dense_activation.map_or("none", |a| a.name())
        ),
    }
}

/// The user's own settings, in short.
pub(super) fn describe(kind: CellKind, s: &Settings) -> String {
    let mut v = vec![
        format!("activation {}", s.activation.name()),
        format!("recurrent_activation {}", s.recurrent_activation.name()),
    ];
    if let Some(r) = s.reset_after {
        v.push(format!("reset_after {r}"));
    }
    v.push(format!(
        "gate_order {}",
        convention::order_letters(kind, &s.order)
    ));
    if s.go_backwards {
        v.push("go_backwards".into());
    }
    if s.carry_state {
        v.push("carry_state".into());
    }
    if let Some(d) = s.dense_activation {
        v.push(format!("dense_activation {}", d.name()));
    }
    format!("your flags: {}", v.join(", "))
}

/// The `lstm`/`gru` flag that sets `field` as in `s` (None when it is the default, i.e. a flag to drop).
pub(super) fn flag_for(field: Field, s: &Settings) -> Option<String> {
    match field {
        Field::RecurrentActivation => Some(format!(
            "--recurrent-activation {}",
            s.recurrent_activation.name()
        )),
        Field::Activation => Some(format!("--activation {}", s.activation.name())),
        Field::GoBackwards => Some(if s.go_backwards {
            "--go-backwards".into()
        } else {
            "no --go-backwards".into()
        }),
        Field::CarryState => Some(if s.carry_state {
            "--carry-state".into()
        } else {
            "no --carry-state".into()
        }),
        Field::DenseActivation => s
            .dense_activation
            .map(|d| format!("--dense-activation {}", d.name())),
        // Set by rewriting the weights (--write-weights), not by a flag.
        Field::GateOrder | Field::Transposed | Field::ResetAfter | Field::GruUpdate => None,
    }
}

pub(super) fn gate_label(g: &str) -> String {
    if g.starts_with("state") {
        g.to_string()
    } else {
        format!("gate {g}")
    }
}
