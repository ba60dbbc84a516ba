//! `rnntrace explain --model` where max-like operations meet exact ties, against tf.GradientTape
//! (`fixtures/generate_explain_ties.py`, versions in `fixtures/explain_ties/VERSIONS.json`): repeated token
//! ids through MaxPooling1D (overlapping and not) and GlobalMaxPooling1D, Maximum/Minimum whose operands tie
//! with different derivatives (x and x·x at 0 and 1) or everywhere (a shared LSTM called twice, a twin
//! with the same weights), Conv1D over repeated rows into max pooling, a masked GlobalMaxPooling1D, and the
//! ReLU layer's kinks (0, threshold, max_value, relu6). TensorFlow's rules there: a max pool window's
//! gradient to its first maximum, `reduce_max` split evenly, Maximum/Minimum to the earlier operand, ReLU
//! 0 at the threshold and 1 at max_value (relu6: 0 at both ends), a plain leaky relu its slope at 0.
//!
//! Tolerance: 1e-4 of the largest |golden| in float32, as the other whole-model goldens (the two sides sum
//! in different orders and use different exp/tanh through the recurrent layers); a wrong tie rule moves
//! a whole gradient entry (a share of 1/2 or 1/3, or a slope of 0 against 1), far beyond that. Each case's
//! `ties.json` says how many exact ties TensorFlow met, so none passes without testing a tie.

use super::explain::{flat, read_json, rel_err, run_model_case};
use super::npy;
use std::path::PathBuf;

#[test]
fn explain_ties_match_tensorflow() {
    let root = crate::fixtures().join("explain_ties");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").exists())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 7, "the generator writes 7 cases: {dirs:?}");
    let tmp = tempfile::tempdir().unwrap();
    let mut worst = Vec::new();
    for dir in dirs {
        let ties = read_json(&dir.join("ties.json"));
        let ties = ties.as_object().unwrap();
        assert!(!ties.is_empty() && ties.values().all(|n| n.as_u64().unwrap() > 0));
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        let save = tmp.path().join(format!("{name}.npz"));
        let (case, v, _) = run_model_case(
            &dir,
            &["--methods", "all", "--save", save.to_str().unwrap()],
        );
        let (_, pred) = npy(&dir.join("pred.npy"));
        let e = rel_err(&flat(&v["prediction"]), &pred, 1.0);
        assert!(e < 1e-4, "{name}: prediction off by {e}");
        let (_, bpred) = npy(&dir.join("baseline_pred.npy"));
        let e = rel_err(&flat(&v["baseline_prediction"]), &bpred, 1.0);
        assert!(e < 1e-4, "{name}: baseline prediction off by {e}");
        let inputs = case["inputs"].as_array().unwrap();
        let several = inputs.len() > 1;
        for (input, key, file) in inputs.iter().flat_map(|i| {
            let input = i[0].as_str().unwrap();
            [
                ("gradient", "grad"),
                ("input_x_gradient", "ixg"),
                ("integrated_gradients", "ig"),
                ("occlusion", "occ"),
            ]
            .map(|(k, f)| (input, k, f))
        }) {
            // Several inputs: attributions keyed by input, --save writes FILE-NAME.npz per input.
            let (attr, saved) = if several {
                (
                    &v["attributions"][input],
                    super::output::npz_members(&tmp.path().join(format!("{name}-{input}.npz"))),
                )
            } else {
                (&v["attributions"], super::output::npz_members(&save))
            };
            let (shape, want) = npy(&dir.join(format!("{file}_{input}.npy")));
            assert!(
                want.iter().any(|w| w.abs() > 0.0),
                "{name}: {input} {key}: an all-zero golden"
            );
            let got = flat(&attr[key]);
            let e = rel_err(&got, &want, 1e-300);
            worst.push((name.clone(), key, e));
            assert!(e < 1e-4, "{name}: {key} off by {e}");
            // --save holds the same numbers, in the golden's shape.
            let z = &saved[&format!("attributions/{key}")];
            assert_eq!(z.shape, shape, "{name}: saved {key}");
            assert!(
                rel_err(&z.data, &want, 1e-300) < 1e-4,
                "{name}: saved {key}"
            );
        }
        if case["completeness_defined"] == true {
            for (b, c) in flat(&v["completeness"]).iter().enumerate() {
                let d = (pred[b] - bpred[b]).abs();
                assert!(
                    c.abs() <= 0.01 * d.max(1e-6),
                    "{name}: {b}: completeness {c}"
                );
            }
        }
    }
    for (n, what, e) in &worst {
        eprintln!("{n:40} {what:24} {e:.3e}");
    }
}
