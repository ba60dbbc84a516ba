/*!
`Conv1D` over `(batch, timesteps, channels)`: `y[b, o, f] = bias[f] + Σ_k Σ_c x[b, o·s + k·d − left, g·cin + c]
· kernel[k, c, f]`, where `g` is output filter `f`'s group and positions outside the sequence read zero.
The kernel is Keras's `(kernel_size, channels / groups, filters)`.
*/

use super::{Padding, window_geometry};
use crate::cell::Real;
use ndarray::{Array3, ArrayView1, ArrayView3};
use rayon::prelude::*;

/// A convolution's geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv1d {
    /// Step between windows.
    pub strides: usize,
    /// Step between kernel taps.
    pub dilation: usize,
    /// How the ends are padded.
    pub padding: Padding,
    /// Channel groups (channels and filters both divide into this many).
    pub groups: usize,
}

impl Conv1d {
    /// The output length for `len` input steps and a kernel of `kernel_size` taps (`None`: no window fits).
    pub fn out_len(&self, len: usize, kernel_size: usize) -> Option<usize> {
        let span = self.dilation.max(1) * (kernel_size.max(1) - 1) + 1;
        window_geometry(len, span, self.strides, self.padding).map(|(n, _)| n)
    }
}

/// Applies the convolution (no activation). Panics if the shapes disagree (the loader has checked them).
pub fn conv1d<T: Real>(
    x: ArrayView3<'_, T>,
    kernel: ArrayView3<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    spec: &Conv1d,
) -> Array3<T> {
    let (batch, len, channels) = x.dim();
    let (taps, cin, filters) = kernel.dim();
    let groups = spec.groups.max(1);
    assert_eq!(
        cin * groups,
        channels,
        "conv1d: channels do not fit the kernel"
    );
    let per_group = filters / groups;
    let dilation = spec.dilation.max(1);
    let span = dilation * (taps - 1) + 1;
    let Some((out_len, left)) = window_geometry(len, span, spec.strides, spec.padding) else {
        return Array3::zeros((batch, 0, filters));
    };
    // Every output sums its taps and channels in the order (k, c) from zero, then adds the bias; the loops
    // below keep that order per output but run over the filters innermost, so that the kernel's rows
    // (contiguous in `f`) are read as slices and the sums vectorise.
    let mut y = Array3::zeros((batch, out_len, filters));
    let kernel = kernel.as_standard_layout();
    let x = x.as_standard_layout();
    let x = x.as_slice().expect("standard layout");
    let kern = kernel.as_slice().expect("standard layout");
    let ys = y.as_slice_mut().expect("fresh array");
    if ys.is_empty() {
        return y;
    }
    // Sequences are independent: one task each on the thread pool.
    ys.par_chunks_mut(out_len * filters)
        .enumerate()
        .for_each(|(b, yb)| {
            for o in 0..out_len {
                let acc = &mut yb[o * filters..(o + 1) * filters];
                for g in 0..groups {
                    let fs = g * per_group..(g + 1) * per_group;
                    let acc = &mut acc[fs.clone()];
                    for k in 0..taps {
                        let pos = (o * spec.strides.max(1) + k * dilation) as isize - left as isize;
                        if pos < 0 || pos as usize >= len {
                            continue;
                        }
                        let row = &x[(b * len + pos as usize) * channels + g * cin..][..cin];
                        for (c, &v) in row.iter().enumerate() {
                            let w = &kern[(k * cin + c) * filters..][fs.clone()];
                            for (a, &w) in acc.iter_mut().zip(w) {
                                *a = *a + v * w;
                            }
                        }
                    }
                }
                if let Some(bias) = &bias {
                    for (a, &v) in acc.iter_mut().zip(bias.iter()) {
                        *a = *a + v;
                    }
                }
            }
        });
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array3, array};

    #[test]
    fn causal_dilated_taps_read_the_past() {
        // one channel, kernel [1, 10] with dilation 2: y[t] = x[t-2] + 10·x[t]
        let x = Array3::from_shape_vec((1, 4, 1), vec![1.0f64, 2.0, 3.0, 4.0]).unwrap();
        let k = Array3::from_shape_vec((2, 1, 1), vec![1.0, 10.0]).unwrap();
        let spec = Conv1d {
            strides: 1,
            dilation: 2,
            padding: Padding::Causal,
            groups: 1,
        };
        let y = conv1d(x.view(), k.view(), None, &spec);
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            [10.0, 20.0, 31.0, 42.0]
        );
        let spec = Conv1d {
            padding: Padding::Valid,
            ..spec
        };
        let y = conv1d(x.view(), k.view(), Some(array![0.5].view()), &spec);
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), [31.5, 42.5]);
    }

    #[test]
    fn groups_see_their_own_channels() {
        // two channels, two groups, one filter each: filter g copies channel g
        let x = Array3::from_shape_vec((1, 1, 2), vec![3.0f64, 5.0]).unwrap();
        let k = Array3::from_shape_vec((1, 1, 2), vec![1.0, 1.0]).unwrap();
        let spec = Conv1d {
            strides: 1,
            dilation: 1,
            padding: Padding::Valid,
            groups: 2,
        };
        let y = conv1d(x.view(), k.view(), None, &spec);
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), [3.0, 5.0]);
    }
}
