/*!
Readings of a weights file under conventions other than the one a flag states, as transforms into Keras's
layout: which gate each stored block holds (ONNX's LSTM i,o,f,c; TensorFlow 1's i,j,f,o; PyTorch's GRU
r,z,n), a kernel stored transposed, the two GRU bias layouts, and the textbook GRU update.

[`Stored`] holds the arrays as the file has them (blocks in file order); [`Stored::build`] turns one
[`Reading`] of them into [`CellWeights`] in Keras layout, so the cells never know which convention a file
used. `rnntrace diagnose` tries many readings until one reproduces the framework's output.

The textbook GRU update `h = (1−z)⊙h_prev + z⊙h̃` is Keras's `h = z'⊙h_prev + (1−z')⊙h̃` with `z' = 1 − z`.
When the recurrent activation σ satisfies `σ(−x) = 1 − σ(x)` (sigmoid, and both hard_sigmoid definitions:
`clip(±x/6 + 1/2)` and `clip(±0.2x + 1/2)` are reflections about 1/2), `z' = σ(−pre_z)`: negating the z
block of the kernel, the recurrent kernel and the biases expresses the textbook form exactly in Keras's.
No other activation has that symmetry, so no other gets a textbook reading ([`complements_under_negation`]).
*/

use super::{CellKind, CellWeights, NamedArrays};
use crate::cell::Activation;
use crate::error::Result;
use crate::io::RawArray;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, s};

/// Which framework's naming the arrays follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// kernel (features, blocks·units), recurrent_kernel (units, blocks·units), bias.
    Keras,
    /// weight_ih (blocks·units, features), weight_hh (blocks·units, units), bias_ih, bias_hh.
    Pytorch,
}

/// The bias as stored, blocks in file order.
#[derive(Debug, Clone)]
pub enum StoredBias {
    /// `use_bias=False`.
    None,
    /// One vector: an LSTM's (PyTorch's two already added), or a `reset_after=False` GRU's (3u,).
    Single(Array1<f64>),
    /// Input and recurrent biases: Keras's (2, 3u) GRU bias, or PyTorch's `bias_ih`, `bias_hh`.
    Double(Array1<f64>, Array1<f64>),
}

/// One way to read the stored arrays.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reading {
    /// The input kernel is stored (blocks·units, features) and is read transposed.
    pub transposed: bool,
    /// `order[j]` is the gate (Keras block index: LSTM i=0 f=1 c=2 o=3, GRU z=0 r=1 h=2) stored in block `j`.
    pub order: Vec<usize>,
    /// GRU `reset_after` (false for LSTM).
    pub reset_after: bool,
    /// GRU: the output follows the textbook update `h = (1−z)⊙h_prev + z⊙h̃`.
    pub textbook_update: bool,
}

/// A layer's arrays as the file stores them, shapes checked.
#[derive(Debug, Clone)]
pub struct Stored {
    /// LSTM or GRU (the cells `diagnose` searches).
    pub kind: CellKind,
    /// State size.
    pub units: usize,
    /// Input features.
    pub features: usize,
    /// The framework naming of the source.
    pub layout: Layout,
    /// The input kernel as stored.
    kernel: Array2<f64>,
    /// The orientations the kernel's shape allows: `false` = (features, blocks·units), `true` = transposed.
    /// Both only when the kernel is square.
    pub kernel_readings: Vec<bool>,
    /// The recurrent kernel, (units, blocks·units), blocks in file order.
    recurrent: Array2<f64>,
    /// Whether the recurrent kernel was stored (blocks·units, units) (always with PyTorch names).
    pub recurrent_transposed: bool,
    /// The bias.
    pub bias: StoredBias,
}

/// Gate orders that frameworks use, as `(order, who)`; the first is the layout's default.
pub fn named_orders(kind: CellKind) -> &'static [(&'static [usize], &'static str)] {
    match kind {
        CellKind::Lstm => &[
            (&[0, 1, 2, 3], "Keras's and PyTorch's"),
            (&[0, 3, 1, 2], "ONNX's"),
            (&[0, 2, 1, 3], "TensorFlow 1's i, j, f, o"),
            (&[0, 1, 3, 2], "Caffe's i, f, o, g"),
            (&[2, 0, 1, 3], "Chainer's a, i, f, o"),
        ],
        CellKind::Gru => &[
            (&[0, 1, 2], "Keras's and ONNX's"),
            (&[1, 0, 2], "PyTorch's r, z, n"),
        ],
        CellKind::SimpleRnn => &[(&[0], "every framework's")],
    }
}

/// Who stores a layer's gate blocks in `order`, if anyone we know of.
pub fn order_name(kind: CellKind, order: &[usize]) -> Option<&'static str> {
    named_orders(kind)
        .iter()
        .find(|(o, _)| *o == order)
        .map(|(_, n)| *n)
}

/// `order` as gate letters in file order: `i,o,f,c`.
pub fn order_letters(kind: CellKind, order: &[usize]) -> String {
    order
        .iter()
        .map(|&g| kind.gate_names()[g])
        .collect::<Vec<_>>()
        .join(",")
}

/// Every permutation of the gate blocks: first the orders frameworks use (the first `common` of
/// [`named_orders`]), then the rest in lexicographic order. Returns `(order, common)`.
pub fn all_orders(kind: CellKind) -> Vec<(Vec<usize>, bool)> {
    let named = named_orders(kind);
    let common = match kind {
        CellKind::Lstm => 3,
        CellKind::Gru => 2,
        CellKind::SimpleRnn => 1,
    };
    let mut out: Vec<(Vec<usize>, bool)> = named
        .iter()
        .enumerate()
        .map(|(i, (o, _))| (o.to_vec(), i < common))
        .collect();
    let mut perm: Vec<usize> = (0..kind.blocks()).collect();
    loop {
        if !out.iter().any(|(o, _)| *o == perm) {
            out.push((perm.clone(), false));
        }
        if !next_permutation(&mut perm) {
            break;
        }
    }
    out
}

fn next_permutation(p: &mut [usize]) -> bool {
    let Some(i) = (1..p.len()).rev().find(|&i| p[i - 1] < p[i]) else {
        return false;
    };
    let j = (i..p.len()).rev().find(|&j| p[j] > p[i - 1]).unwrap_or(i);
    p.swap(i - 1, j);
    p[i..].reverse();
    true
}

/// True when `σ(−x) = 1 − σ(x)` for every x, so the textbook GRU update has an exact Keras reading.
pub fn complements_under_negation(a: Activation) -> bool {
    matches!(
        a,
        Activation::Sigmoid | Activation::HardSigmoid | Activation::HardSigmoidKeras2
    )
}

/// The role of a Keras array name: `kernel`, `lstm/lstm_cell/recurrent_kernel:0`, …
fn role(name: &str) -> Option<&'static str> {
    let base = name.rsplit('/').next().unwrap_or(name);
    match base.split(':').next().unwrap_or(base) {
        "kernel" => Some("kernel"),
        "recurrent_kernel" => Some("recurrent_kernel"),
        "bias" => Some("bias"),
        _ => None,
    }
}

fn mat(a: &RawArray) -> Array2<f64> {
    Array2::from_shape_vec((a.shape[0], a.shape[1]), a.data.clone())
        .expect("2-D shape checked by the caller")
}

impl Stored {
    /// Reads Keras-named (or positional) arrays, allowing a kernel stored transposed and a recurrent
    /// kernel stored (blocks·units, units). Errors name the file; callers report the stricter loader's
    /// message when no reading fits at all.
    pub fn from_keras(kind: CellKind, src: &NamedArrays) -> Result<Stored> {
        let (k, r, b) = if src.positional {
            match src.arrays.as_slice() {
                [(_, k), (_, r)] => (k, r, None),
                [(_, k), (_, r), (_, b)] => (k, r, Some(b)),
                other => {
                    return Err(src.error(format!(
                        "holds {} arrays; expected 3 (kernel, recurrent_kernel, bias) or 2 (use_bias=False)",
                        other.len()
                    )));
                }
            }
        } else {
            let find = |want: &str| src.arrays.iter().find(|(n, _)| role(n) == Some(want));
            match (find("kernel"), find("recurrent_kernel")) {
                (Some((_, k)), Some((_, r))) => (k, r, find("bias").map(|(_, b)| b)),
                _ => {
                    return Err(src.error(format!(
                        "needs arrays named kernel and recurrent_kernel; found: {}",
                        src.names()
                    )));
                }
            }
        };
        let g = kind.blocks();
        if k.ndim() != 2 || r.ndim() != 2 {
            return Err(src.error(format!(
                "kernel has shape {} and recurrent_kernel {}; expected 2-D arrays",
                k.shape_str(),
                r.shape_str()
            )));
        }
        let (r0, r1) = (r.shape[0], r.shape[1]);
        let (units, recurrent_transposed) = if r0 > 0 && r1 == g * r0 {
            (r0, false)
        } else if r1 > 0 && r0 == g * r1 {
            (r1, true)
        } else {
            return Err(src.error(format!(
                "recurrent_kernel has shape {}; expected (units, {g} × units) for an {} (or its transpose)",
                r.shape_str(),
                kind.name().to_uppercase()
            )));
        };
        let gu = g * units;
        let (k0, k1) = (k.shape[0], k.shape[1]);
        let mut kernel_readings = Vec::new();
        if k1 == gu && k0 > 0 {
            kernel_readings.push(false);
        }
        if k0 == gu && k1 > 0 {
            kernel_readings.push(true);
        }
        if kernel_readings.is_empty() {
            return Err(src.error(format!(
                "kernel has shape {}; expected (features, {gu}) or its transpose for an {} with {units} units",
                k.shape_str(),
                kind.name().to_uppercase()
            )));
        }
        let features = if kernel_readings[0] { k1 } else { k0 };
        let recurrent = if recurrent_transposed {
            mat(r).reversed_axes().as_standard_layout().into_owned()
        } else {
            mat(r)
        };
        let bias = match b {
            None => StoredBias::None,
            Some(b) if b.shape == [gu] => StoredBias::Single(Array1::from(b.data.clone())),
            Some(b) if kind.has_reset_after() && b.shape == [2, gu] => StoredBias::Double(
                Array1::from(b.data[..gu].to_vec()),
                Array1::from(b.data[gu..].to_vec()),
            ),
            Some(b) => {
                return Err(src.error(format!(
                    "bias has shape {}; expected ({gu},){} for an {} with {units} units",
                    b.shape_str(),
                    if kind.has_reset_after() {
                        format!(" or (2, {gu})")
                    } else {
                        String::new()
                    },
                    kind.name().to_uppercase()
                )));
            }
        };
        Ok(Stored {
            kind,
            units,
            features,
            layout: Layout::Keras,
            kernel: mat(k),
            kernel_readings,
            recurrent,
            recurrent_transposed,
            bias,
        })
    }

    /// Reads layer `layer` of a PyTorch state dict (blocks in PyTorch's order: LSTM i,f,g,o, GRU r,z,n).
    /// Shapes are checked by [`super::pytorch::from_state_dict`] first, whose messages are kept.
    pub fn from_pytorch(kind: CellKind, src: &NamedArrays, layer: usize) -> Result<Stored> {
        let checked = super::pytorch::from_state_dict(kind, src, layer, false)?;
        let sfx = format!("_l{layer}");
        let get = |p: &str| src.get(&format!("{p}{sfx}"));
        let (Some(w_ih), Some(w_hh)) = (get("weight_ih"), get("weight_hh")) else {
            unreachable!("checked by from_state_dict")
        };
        let gu = kind.blocks() * checked.units;
        let vec = |b: Option<&RawArray>| b.map(|b| Array1::from(b.data.clone()));
        let (bi, bh) = (vec(get("bias_ih")), vec(get("bias_hh")));
        let zero = || Array1::zeros(gu);
        let bias = match (kind, bi, bh) {
            (_, None, None) => StoredBias::None,
            (CellKind::Lstm | CellKind::SimpleRnn, bi, bh) => {
                StoredBias::Single(bi.unwrap_or_else(zero) + bh.unwrap_or_else(zero))
            }
            (CellKind::Gru, bi, bh) => {
                StoredBias::Double(bi.unwrap_or_else(zero), bh.unwrap_or_else(zero))
            }
        };
        Ok(Stored {
            kind,
            units: checked.units,
            features: checked.features,
            layout: Layout::Pytorch,
            kernel: mat(w_ih),
            kernel_readings: vec![true],
            recurrent: mat(w_hh).reversed_axes().as_standard_layout().into_owned(),
            recurrent_transposed: true,
            bias,
        })
    }

    /// The gate order the layout documents (Keras: i,f,c,o / z,r,h; PyTorch GRU: r,z,n).
    pub fn default_order(&self) -> Vec<usize> {
        match (self.layout, self.kind) {
            (Layout::Pytorch, CellKind::Gru) => vec![1, 0, 2],
            _ => (0..self.kind.blocks()).collect(),
        }
    }

    /// The kernel orientation the layout documents.
    pub fn default_transposed(&self) -> bool {
        self.layout == Layout::Pytorch
    }

    /// `reset_after` values the bias layout states (a GRU without bias states neither: both), and those
    /// it allows only by reinterpretation (a (3u,) bias as the input bias of a `reset_after=True` GRU with a
    /// zero recurrent bias; input and recurrent biases added into one for `reset_after=False`).
    pub fn reset_after_readings(&self) -> (Vec<bool>, Vec<bool>) {
        match (self.kind, &self.bias) {
            (CellKind::Lstm | CellKind::SimpleRnn, _) => (vec![false], vec![]),
            (CellKind::Gru, StoredBias::None) => (vec![true, false], vec![]),
            (CellKind::Gru, StoredBias::Single(_)) => (vec![false], vec![true]),
            (CellKind::Gru, StoredBias::Double(..)) => (vec![true], vec![false]),
        }
    }

    /// The weights under `reading`, in Keras layout. `reading` must use an orientation from
    /// [`Stored::kernel_readings`] and a permutation of the gate blocks.
    pub fn build(&self, reading: &Reading) -> CellWeights<f64> {
        let (u, g) = (self.units, self.kind.blocks());
        debug_assert!(self.kernel_readings.contains(&reading.transposed));
        // Keras block k is stored in block from[k].
        let from: Vec<usize> = (0..g)
            .map(|k| {
                reading
                    .order
                    .iter()
                    .position(|&x| x == k)
                    .expect("a permutation")
            })
            .collect();
        let kernel = if reading.transposed {
            self.kernel.t()
        } else {
            self.kernel.view()
        };
        let mut kernel = permute_columns(kernel, u, &from);
        let mut recurrent = permute_columns(self.recurrent.view(), u, &from);
        let p = |b: &Array1<f64>| permute_vector(b.view(), u, &from);
        let gru = self.kind.has_reset_after();
        let (mut bias, mut recurrent_bias) = match (&self.bias, gru && reading.reset_after) {
            (StoredBias::None, _) => (None, None),
            (StoredBias::Single(b), false) => (Some(p(b)), None),
            (StoredBias::Single(b), true) => (Some(p(b)), Some(Array1::zeros(g * u))),
            (StoredBias::Double(a, b), true) => (Some(p(a)), Some(p(b))),
            (StoredBias::Double(a, b), false) => (Some(p(&(a + b))), None),
        };
        if gru && reading.textbook_update {
            let z = s![.., 0..u];
            kernel.slice_mut(z).mapv_inplace(|v| -v);
            recurrent.slice_mut(z).mapv_inplace(|v| -v);
            for b in [bias.as_mut(), recurrent_bias.as_mut()]
                .into_iter()
                .flatten()
            {
                b.slice_mut(s![0..u]).mapv_inplace(|v| -v);
            }
        }
        CellWeights {
            kind: self.kind,
            units: u,
            features: self.features,
            kernel,
            recurrent_kernel: recurrent,
            bias,
            recurrent_bias,
            reset_after: gru && reading.reset_after,
            projection: None,
        }
    }
}

/// Column blocks of width `units` reordered: block `k` of the result is block `from[k]` of `a`.
pub fn permute_columns(a: ArrayView2<'_, f64>, units: usize, from: &[usize]) -> Array2<f64> {
    let mut out = Array2::zeros((a.nrows(), from.len() * units));
    for (k, &j) in from.iter().enumerate() {
        out.slice_mut(s![.., k * units..(k + 1) * units])
            .assign(&a.slice(s![.., j * units..(j + 1) * units]));
    }
    out
}

/// Blocks of width `units` of a vector reordered: block `k` of the result is block `from[k]` of `v`.
pub fn permute_vector(v: ArrayView1<'_, f64>, units: usize, from: &[usize]) -> Array1<f64> {
    permute_columns(v.insert_axis(Axis(0)), units, from)
        .index_axis_move(Axis(0), 0)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::RawArray;
    use std::path::PathBuf;

    fn arrays(list: Vec<RawArray>) -> NamedArrays {
        NamedArrays {
            path: PathBuf::from("w.json"),
            positional: true,
            arrays: list.into_iter().map(|a| (String::new(), a)).collect(),
            meta: Default::default(),
        }
    }

    fn seq(shape: &[usize], start: f64) -> RawArray {
        let n: usize = shape.iter().product();
        RawArray::new(
            shape.to_vec(),
            (0..n).map(|i| start + i as f64).collect(),
            "float64",
        )
    }

    #[test]
    fn textbook_symmetry_holds_exactly_for_the_three_gate_activations() {
        for a in crate::cell::activation::NAMES.iter().map(|(_, a)| *a) {
            if !a.is_elementwise() {
                continue;
            }
            let holds = (-80..=80).all(|i| {
                let x = i as f64 * 0.1;
                (a.scalar(-x) - (1.0 - a.scalar(x))).abs() < 1e-12
            });
            assert_eq!(holds, complements_under_negation(a), "{}", a.name());
        }
    }

    #[test]
    fn all_orders_are_the_permutations_named_first() {
        let o = all_orders(CellKind::Lstm);
        assert_eq!(o.len(), 24);
        assert_eq!(o[1].0, vec![0, 3, 1, 2]);
        assert!(o[2].1 && !o[3].1);
        let mut sorted: Vec<_> = o.iter().map(|(p, _)| p.clone()).collect();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 24);
        assert_eq!(all_orders(CellKind::Gru).len(), 6);
        assert_eq!(order_letters(CellKind::Lstm, &[0, 3, 1, 2]), "i,o,f,c");
    }

    #[test]
    fn onnx_order_is_undone_and_identity_is_identity() {
        // units 1, features 1: kernel columns are the four gates in file order.
        let src = arrays(vec![seq(&[1, 4], 0.0), seq(&[1, 4], 10.0), seq(&[4], 20.0)]);
        let st = Stored::from_keras(CellKind::Lstm, &src).unwrap();
        let read = |order: Vec<usize>| Reading {
            transposed: false,
            order,
            reset_after: false,
            textbook_update: false,
        };
        let w = st.build(&read(vec![0, 1, 2, 3]));
        assert_eq!(w.kernel.row(0).to_vec(), vec![0.0, 1.0, 2.0, 3.0]);
        // File holds i, o, f, c: Keras's i, f, c, o are file blocks 0, 2, 3, 1.
        let w = st.build(&read(vec![0, 3, 1, 2]));
        assert_eq!(w.kernel.row(0).to_vec(), vec![0.0, 2.0, 3.0, 1.0]);
        assert_eq!(
            w.recurrent_kernel.row(0).to_vec(),
            vec![10.0, 12.0, 13.0, 11.0]
        );
        assert_eq!(w.bias.unwrap().to_vec(), vec![20.0, 22.0, 23.0, 21.0]);
    }

    #[test]
    fn square_kernel_has_both_readings_and_transposed_recurrent_is_recognised() {
        // LSTM, 1 unit, 4 features: kernel (4, 4) square; recurrent stored (4, 1).
        let src = arrays(vec![seq(&[4, 4], 0.0), seq(&[4, 1], 0.0)]);
        let st = Stored::from_keras(CellKind::Lstm, &src).unwrap();
        assert_eq!(st.kernel_readings, vec![false, true]);
        assert!(st.recurrent_transposed);
        assert_eq!((st.units, st.features), (1, 4));
        let w = st.build(&Reading {
            transposed: true,
            order: vec![0, 1, 2, 3],
            reset_after: false,
            textbook_update: false,
        });
        assert_eq!(w.kernel.row(0).to_vec(), vec![0.0, 4.0, 8.0, 12.0]);
        assert_eq!(w.recurrent_kernel.row(0).to_vec(), vec![0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn gru_bias_readings_and_textbook_negation() {
        let src = arrays(vec![
            seq(&[1, 3], 1.0),
            seq(&[1, 3], 1.0),
            seq(&[2, 3], 1.0),
        ]);
        let st = Stored::from_keras(CellKind::Gru, &src).unwrap();
        assert_eq!(st.reset_after_readings(), (vec![true], vec![false]));
        let w = st.build(&Reading {
            transposed: false,
            order: vec![0, 1, 2],
            reset_after: false,
            textbook_update: true,
        });
        assert!(!w.reset_after && w.recurrent_bias.is_none());
        assert_eq!(w.bias.unwrap().to_vec(), vec![-5.0, 7.0, 9.0]);
        assert_eq!(w.kernel.row(0).to_vec(), vec![-1.0, 2.0, 3.0]);
    }
}
