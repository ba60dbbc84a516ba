/*!
Comparing predictions with the framework's saved output, with NumPy's `allclose` rule:
an element passes when `|ours − expected| ≤ atol + rtol·|expected|`. NaN never passes.
*/

use serde::Serialize;

/// The verdict of a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Largest `|ours − expected|` (NaN-aware: NaN if any element is NaN on either side).
    pub max_abs_error: f64,
    /// Absolute tolerance used.
    pub atol: f64,
    /// Relative tolerance used.
    pub rtol: f64,
    /// Elements outside tolerance.
    pub mismatches: usize,
    /// Elements compared.
    pub total: usize,
    /// True when no element is outside tolerance.
    pub passed: bool,
    /// Where the largest error is: index into the expected array's shape.
    pub worst_index: Vec<usize>,
    /// Our value at `worst_index`.
    pub worst_ours: f64,
    /// The expected value at `worst_index`.
    pub worst_expected: f64,
    /// Why these tolerances, when they are not the ones given (a float16 model's, e.g.
    /// `4 float16 ulps at the largest expected value 0.38 (mixed_float16)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<String>,
}

/// Compares two equally long slices laid out with `shape` (C order).
pub fn compare(
    ours: &[f64],
    expected: &[f64],
    shape: &[usize],
    atol: f64,
    rtol: f64,
) -> Comparison {
    debug_assert_eq!(ours.len(), expected.len());
    let mut worst = 0usize;
    let mut max_err = 0.0f64;
    let mut mismatches = 0;
    let mut saw_nan = false;
    for (i, (&a, &b)) in ours.iter().zip(expected).enumerate() {
        let err = (a - b).abs();
        let ok = err <= atol + rtol * b.abs();
        if !ok {
            mismatches += 1;
        }
        if err.is_nan() {
            if !saw_nan {
                saw_nan = true;
                worst = i;
            }
        } else if !saw_nan && err > max_err {
            max_err = err;
            worst = i;
        }
    }
    Comparison {
        max_abs_error: if saw_nan { f64::NAN } else { max_err },
        atol,
        rtol,
        mismatches,
        total: ours.len(),
        passed: mismatches == 0,
        worst_index: unravel(worst, shape),
        worst_ours: ours.get(worst).copied().unwrap_or(f64::NAN),
        worst_expected: expected.get(worst).copied().unwrap_or(f64::NAN),
        tolerance: None,
    }
}

fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for k in (0..shape.len()).rev() {
        let d = shape[k].max(1);
        idx[k] = i % d;
        i /= d;
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_is_a_mismatch_and_is_reported_as_worst() {
        let c = compare(&[1.0, f64::NAN, 3.0], &[1.0, 2.0, 3.5], &[3], 1e-5, 1e-5);
        assert!(!c.passed);
        assert_eq!(c.mismatches, 2);
        assert_eq!(c.worst_index, vec![1]);
    }

    #[test]
    fn allclose_rule_and_location() {
        let c = compare(
            &[0.0, 1.0, 2.0, 3.00002],
            &[0.0, 1.0, 2.0, 3.0],
            &[2, 2],
            1e-5,
            1e-5,
        );
        // 2e-5 > 1e-5 + 3e-5? no: 2e-5 <= 4e-5, so it passes.
        assert!(c.passed, "{c:?}");
        assert_eq!(c.worst_index, vec![1, 1]);
        let c = compare(
            &[0.0, 1.0, 2.0, 3.1],
            &[0.0, 1.0, 2.0, 3.0],
            &[2, 2],
            1e-5,
            1e-5,
        );
        assert!(!c.passed && c.mismatches == 1);
    }
}
