/*!
scikit-learn scaler parameters, to show predictions in original units (`--inverse-scale S.json`).

Accepted JSON (write it from Python with `json.dump({k: getattr(s, k).tolist() for k in (...)}, f)`):
- MinMaxScaler: `{"data_min_": [...], "data_max_": [...], "feature_range": [0, 1]}` (or its `min_`/`scale_`);
- StandardScaler: `{"mean_": [...], "scale_": [...]}` (`mean_` may be absent or null for `with_mean=False`);
- RobustScaler: `{"center_": [...], "scale_": [...]}`.

One value per output column, or one value for all.
*/

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// An affine map back to original units: `original = scaled · mul + add`, per output column.
#[derive(Debug, Clone, PartialEq)]
pub struct Scaler {
    mul: Vec<f64>,
    add: Vec<f64>,
    /// "MinMaxScaler" or "StandardScaler", for headings.
    pub kind: &'static str,
}

impl Scaler {
    /// Maps a scaled value of output column `j` back to original units.
    pub fn inverse(&self, v: f64, j: usize) -> f64 {
        let k = if self.mul.len() == 1 { 0 } else { j };
        v * self.mul[k] + self.add[k]
    }

    /// Loads scaler parameters for `outputs` output columns.
    pub fn load(path: &Path, outputs: usize) -> Result<Scaler> {
        let bytes = crate::io::read_file(path)?;
        let err = |w: String| Error::input(path, w);
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|e| err(format!("is not valid JSON: {e}")))?;
        let Value::Object(m) = v else {
            return Err(err(
                "expected a JSON object of scaler attributes (data_min_/data_max_ or mean_/scale_)"
                    .into(),
            ));
        };
        let nums = |k: &str| -> Result<Option<Vec<f64>>> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => Ok(Some(vec![n.as_f64().unwrap_or(f64::NAN)])),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_f64()
                            .ok_or_else(|| err(format!("'{k}' holds {x}; expected numbers")))
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(Some),
                Some(other) => Err(err(format!("'{k}' is {other}; expected a list of numbers"))),
            }
        };
        let (mul, add, kind) = if let (Some(lo), Some(hi)) =
            (nums("data_min_")?, nums("data_max_")?)
        {
            let range = nums("feature_range")?.unwrap_or_else(|| vec![0.0, 1.0]);
            if range.len() != 2 || range[1] <= range[0] {
                return Err(err(
                    "'feature_range' must be [min, max] with min < max".into()
                ));
            }
            if lo.len() != hi.len() {
                return Err(err(
                    "'data_min_' and 'data_max_' have different lengths".into()
                ));
            }
            let mul: Vec<f64> = lo
                .iter()
                .zip(&hi)
                .map(|(l, h)| (h - l) / (range[1] - range[0]))
                .collect();
            let add: Vec<f64> = lo.iter().zip(&mul).map(|(l, m)| l - range[0] * m).collect();
            (mul, add, "MinMaxScaler")
        } else if let (Some(min_), Some(scale_), true) =
            (nums("min_")?, nums("scale_")?, m.contains_key("min_"))
        {
            // MinMaxScaler's own attributes: scaled = x·scale_ + min_.
            let mul: Vec<f64> = scale_.iter().map(|s| 1.0 / s).collect();
            let add: Vec<f64> = min_.iter().zip(&scale_).map(|(m, s)| -m / s).collect();
            (mul, add, "MinMaxScaler")
        } else if let (Some(center), Some(scale)) = (nums("center_")?, nums("scale_")?) {
            // RobustScaler: scaled = (x − center_) / scale_.
            if center.len() != scale.len() {
                return Err(err("'center_' and 'scale_' have different lengths".into()));
            }
            (scale, center, "RobustScaler")
        } else if let Some(scale) = nums("scale_")? {
            let mean = nums("mean_")?.unwrap_or_else(|| vec![0.0; scale.len()]);
            if mean.len() != scale.len() {
                return Err(err("'mean_' and 'scale_' have different lengths".into()));
            }
            (scale, mean, "StandardScaler")
        } else {
            return Err(err(
                "has neither data_min_/data_max_ (MinMaxScaler) nor scale_ (StandardScaler)".into(),
            ));
        };
        // One column per output: a scaler of another width would be applied to columns it was not
        // fitted on (a 1-column scaler to every unit of a layer with no head), a silently wrong table.
        if mul.len() != outputs {
            let hint = if mul.len() < outputs {
                " (predictions of a layer with no Dense head have one column per unit: did you mean --dense?)"
            } else {
                ""
            };
            return Err(err(format!(
                "has parameters for {} column{}; the predictions have {outputs}: a scaler must have one column per output{hint}",
                mul.len(),
                if mul.len() == 1 { "" } else { "s" }
            )));
        }
        if mul.iter().chain(&add).any(|v| !v.is_finite()) {
            return Err(err("holds non-finite parameters".into()));
        }
        Ok(Scaler { mul, add, kind })
    }
}
