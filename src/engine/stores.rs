/*!
Where a run records: [`Stores`], time-major per-gate arrays for a block of steps, allocated 64-byte
aligned so the fused kernels' vector stores never straddle cache lines.
*/

#[allow(unused_imports)]
use super::*;

/// A block of recorded steps, time-major `(steps, sequences, units)`, one array per gate; empty or `None`
/// where not recorded.
#[derive(Debug, Clone)]
pub struct Stores<T> {
    /// Pre-activations, one array per gate block (in gate order).
    pub pre: Vec<Array3<T>>,
    /// Activated gates, one array per gate block.
    pub gates: Vec<Array3<T>>,
    /// Hidden states.
    pub h: Option<Array3<T>>,
    /// Cell states (LSTM).
    pub c: Option<Array3<T>>,
    /// Layer outputs: only with a mask (otherwise they are the hidden states).
    pub out: Option<Array3<T>>,
    /// Masked steps.
    pub masked: Array2<bool>,
}

impl<T: Real> Stores<T> {
    pub(super) fn new(
        steps: usize,
        batch: usize,
        blocks: usize,
        (u, hw): (usize, usize),
        lstm: bool,
        masking: bool,
        record: Record,
    ) -> Stores<T> {
        let z = |on: bool, w: usize| on.then(|| aligned_zeros(ndarray::Ix3(steps, batch, w)));
        let per_gate = |on: bool| {
            (0..if on { blocks } else { 0 })
                .map(|_| aligned_zeros(ndarray::Ix3(steps, batch, u)))
                .collect()
        };
        Stores {
            pre: per_gate(record.pre),
            gates: per_gate(record.gates),
            h: z(record.states && !(record.cell_only && lstm), hw),
            c: z(record.states && lstm, u),
            out: z(record.states && !(record.cell_only && lstm) && masking, hw),
            masked: Array2::from_elem((steps, batch), false),
        }
    }

    /// Number of steps held.
    pub fn steps(&self) -> usize {
        self.masked.nrows()
    }

    /// Mutable views of the rows `rows` of every array.
    pub(super) fn lane_views(&mut self, chunks: &[Range<usize>]) -> Vec<LaneViews<'_, T>> {
        fn split<'a, A>(
            a: Option<&'a mut Array3<A>>,
            chunks: &[Range<usize>],
        ) -> Vec<Option<ArrayViewMut3<'a, A>>> {
            match a {
                None => chunks.iter().map(|_| None).collect(),
                Some(a) => {
                    let mut rest = a.view_mut();
                    let mut out = Vec::with_capacity(chunks.len());
                    for r in chunks {
                        let (head, tail) = rest.split_at(Axis(1), r.len());
                        out.push(Some(head));
                        rest = tail;
                    }
                    out
                }
            }
        }
        let mut masked = Vec::with_capacity(chunks.len());
        let mut rest = self.masked.view_mut();
        for r in chunks {
            let (head, tail) = rest.split_at(Axis(1), r.len());
            masked.push(head);
            rest = tail;
        }
        /// Each gate's lane views, regrouped per lane.
        fn per_lane<'a, A>(
            arrays: &'a mut [Array3<A>],
            chunks: &[Range<usize>],
        ) -> std::vec::IntoIter<Vec<ArrayViewMut3<'a, A>>> {
            let mut lanes: Vec<Vec<ArrayViewMut3<'a, A>>> =
                chunks.iter().map(|_| Vec::new()).collect();
            for a in arrays.iter_mut() {
                for (lane, v) in lanes.iter_mut().zip(split(Some(a), chunks)) {
                    lane.extend(v);
                }
            }
            lanes.into_iter()
        }
        let mut pre = per_lane(&mut self.pre, chunks);
        let mut gates = per_lane(&mut self.gates, chunks);
        let mut h = split(self.h.as_mut(), chunks).into_iter();
        let mut c = split(self.c.as_mut(), chunks).into_iter();
        let mut out = split(self.out.as_mut(), chunks).into_iter();
        masked
            .into_iter()
            .map(|m| LaneViews {
                pre: pre.next().unwrap_or_default(),
                gates: gates.next().unwrap_or_default(),
                h: h.next().flatten(),
                c: c.next().flatten(),
                out: out.next().flatten(),
                masked: m,
            })
            .collect()
    }
}

/// A zeroed standard-layout array whose first element is 64-byte aligned (a cache line, and an AVX-512
/// vector): the fused kernels store whole vectors per row, and a misaligned one would split every store
/// across two cache lines. (The allocator aligns large blocks to 16 bytes only.)
pub(super) fn aligned_zeros<T: Real, D: ndarray::Dimension>(shape: D) -> ndarray::Array<T, D> {
    let n = shape.size();
    let pad = 64 / std::mem::size_of::<T>();
    let mut flat = ndarray::Array1::<T>::zeros(n + pad);
    let skip = flat.as_ptr().align_offset(64).min(pad);
    flat.slice_collapse(s![skip..skip + n]);
    flat.into_shape_with_order(shape)
        .expect("a contiguous array of the shape's size")
}

/// `a` copied into an [`aligned_zeros`] array.
pub(super) fn aligned_copy<T: Real>(a: ArrayView2<'_, T>) -> Array2<T> {
    let mut out = aligned_zeros(a.raw_dim());
    out.assign(&a);
    out
}
