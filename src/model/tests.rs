/*!
Loads every model in `fixtures/models/` (written by real Keras, see `fixtures/generate_models.py`) and
checks the layers against the case's `layers.json` and every array against `weights.npz` (Keras's
`layer.get_weights()`); then the ways a file can be wrong.
*/

use super::*;
use serde_json::Value;
use std::io::{Cursor, Read, Write};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models")
}

struct Case {
    name: String,
    file: PathBuf,
    info: Value,
    weights: Vec<(String, RawArray)>,
}

fn case(name: &str) -> Case {
    let dir = fixtures().join(name);
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("layers.json")).unwrap()).unwrap();
    let file = dir.join(info["file"].as_str().unwrap());
    let weights = crate::io::npz::parse(&std::fs::read(dir.join("weights.npz")).unwrap()).unwrap();
    Case {
        name: name.to_string(),
        file,
        info,
        weights,
    }
}

fn all_cases() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            e.path()
                .join("layers.json")
                .exists()
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    names
}

/// Cases the structural check skips (their layers.json predates Conv1D and graphs): both were refused
/// once and now run; tests/cli/models.rs checks them against Keras.
const REFUSED: &[&str] = &["unsupported_conv1d", "functional_branching"];

fn shape_json(s: &[Option<usize>]) -> Value {
    Value::Array(
        s.iter()
            .map(|d| d.map_or(Value::Null, |d| Value::from(d as u64)))
            .collect(),
    )
}

fn expected_activation(v: &Value, keras2: bool) -> String {
    match v.as_str() {
        None => String::new(),
        Some("hard_sigmoid") if keras2 => "hard_sigmoid_keras2".into(),
        Some(s) => s.to_string(),
    }
}

fn check_recurrent(case: &str, label: &str, r: &Recurrent, cfg: &Value, keras2: bool) {
    let ctx = format!("{case}: {label}");
    assert_eq!(
        r.cell.class_name(),
        cfg["class_name"].as_str().unwrap(),
        "{ctx}"
    );
    assert_eq!(r.units as u64, cfg["units"].as_u64().unwrap(), "{ctx}");
    assert_eq!(
        r.activation,
        expected_activation(&cfg["activation"], keras2),
        "{ctx}"
    );
    assert_eq!(
        r.recurrent_activation,
        expected_activation(&cfg["recurrent_activation"], keras2),
        "{ctx}"
    );
    assert_eq!(r.use_bias, cfg["use_bias"].as_bool().unwrap(), "{ctx}");
    assert_eq!(r.bias.is_some(), r.use_bias, "{ctx}");
    assert_eq!(
        r.return_sequences,
        cfg["return_sequences"].as_bool().unwrap(),
        "{ctx}"
    );
    assert_eq!(
        r.go_backwards,
        cfg["go_backwards"].as_bool().unwrap(),
        "{ctx}"
    );
    assert_eq!(r.stateful, cfg["stateful"].as_bool().unwrap(), "{ctx}");
    assert_eq!(
        r.return_state,
        cfg["return_state"].as_bool().unwrap(),
        "{ctx}"
    );
    assert_eq!(
        r.reset_after,
        cfg["reset_after"].as_bool().unwrap_or(false),
        "{ctx}"
    );
    assert_eq!(
        r.kernel.shape,
        [r.features, r.units * r.cell.blocks()],
        "{ctx}"
    );
}

/// The layer's arrays in `get_weights()` order.
fn arrays_of(kind: &LayerKind) -> Vec<&RawArray> {
    fn rec(r: &Recurrent) -> Vec<&RawArray> {
        let mut v = vec![&r.kernel, &r.recurrent_kernel];
        v.extend(r.bias.as_ref());
        v
    }
    match kind {
        LayerKind::Recurrent(r) => rec(r),
        LayerKind::Bidirectional {
            forward, backward, ..
        } => {
            let mut v = rec(forward);
            v.extend(rec(backward));
            v
        }
        LayerKind::Dense { kernel, bias, .. }
        | LayerKind::TimeDistributedDense { kernel, bias, .. }
        | LayerKind::Conv1D { kernel, bias, .. } => {
            let mut v = vec![kernel];
            v.extend(bias.as_ref());
            v
        }
        LayerKind::Embedding { embeddings, .. } => vec![embeddings],
        LayerKind::BatchNorm {
            gamma,
            beta,
            moving_mean,
            moving_variance,
            ..
        } => {
            let mut v: Vec<&RawArray> = gamma.iter().chain(beta.iter()).collect();
            v.extend([moving_mean, moving_variance]);
            v
        }
        LayerKind::LayerNorm { gamma, beta, .. } => gamma.iter().chain(beta.iter()).collect(),
        _ => Vec::new(),
    }
}

fn check_case(name: &str) -> SavedModel {
    let c = case(name);
    let m = load(&c.file).unwrap_or_else(|e| panic!("{name}: {e}"));
    let info = &c.info;
    let keras2 = info["keras2"].as_bool().unwrap();
    assert_eq!(m.keras2, keras2, "{name}: keras2");
    let framework = info["framework"].as_str().unwrap();
    assert!(
        framework.ends_with(&m.keras_version),
        "{name}: {framework} vs {}",
        m.keras_version
    );
    let format = match info["format"].as_str().unwrap() {
        "keras3_zip" => ModelFormat::Keras3Zip,
        _ => ModelFormat::LegacyH5,
    };
    assert_eq!(m.format, format, "{name}");
    assert_eq!(
        shape_json(&m.input_shape),
        info["input_shape"],
        "{name}: input shape"
    );

    let expected = info["layers"].as_array().unwrap();
    let got: Vec<&Layer> = m.compute_layers().collect();
    let names: Vec<&str> = got.iter().map(|l| l.name.as_str()).collect();
    let want: Vec<&str> = expected
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, want, "{name}: layer names");
    for (l, e) in got.iter().zip(expected) {
        let label = format!("layer {}", l.name);
        assert_eq!(
            l.class_name,
            e["class_name"].as_str().unwrap(),
            "{name}: {label}"
        );
        let shape = l
            .output_shape
            .as_deref()
            .map(shape_json)
            .unwrap_or(Value::Null);
        assert_eq!(shape, e["output_shape"], "{name}: {label} output shape");
        let cfg = &e["config"];
        match &l.kind {
            LayerKind::Recurrent(r) => check_recurrent(name, &label, r, cfg, keras2),
            LayerKind::Bidirectional {
                forward,
                backward,
                merge_mode,
            } => {
                assert_eq!(
                    merge_mode.as_deref(),
                    cfg["merge_mode"].as_str(),
                    "{name}: {label}"
                );
                check_recurrent(name, &label, forward, &cfg["forward"], keras2);
                check_recurrent(name, &label, backward, &cfg["backward"], keras2);
                // Keras forces this on both copies.
                assert_eq!(forward.zero_output_for_mask, forward.return_sequences);
                assert_eq!(backward.zero_output_for_mask, backward.return_sequences);
                assert!(
                    backward.go_backwards && !forward.go_backwards,
                    "{name}: {label}"
                );
            }
            LayerKind::Dense { activation, .. } => {
                assert_eq!(
                    *activation,
                    expected_activation(&cfg["activation"], keras2),
                    "{name}: {label}"
                );
            }
            LayerKind::TimeDistributedDense {
                activation, kernel, ..
            } => {
                assert_eq!(cfg["layer"], "Dense");
                assert_eq!(kernel.shape[1] as u64, cfg["units"].as_u64().unwrap());
                assert_eq!(
                    *activation,
                    expected_activation(&cfg["activation"], keras2),
                    "{name}: {label}"
                );
            }
            LayerKind::Activation { activation } => {
                assert_eq!(
                    *activation,
                    expected_activation(&cfg["activation"], keras2),
                    "{name}: {label}"
                );
            }
            LayerKind::Masking { mask_value } => {
                assert_eq!(
                    *mask_value,
                    cfg["mask_value"].as_f64().unwrap(),
                    "{name}: {label}"
                );
            }
            LayerKind::Input => unreachable!(),
            // The layers around the recurrent cells: checked against Keras end to end by
            // tests/cli/real_models.rs (fixtures/real_models/).
            _ => {}
        }
        // Every array equals what Keras's get_weights() returned, bit for bit.
        let arrays = arrays_of(&l.kind);
        let prefix = format!("{}/", l.name);
        let keras: Vec<&RawArray> = {
            let mut v: Vec<(usize, &RawArray)> = c
                .weights
                .iter()
                .filter_map(|(k, a)| {
                    k.strip_prefix(&prefix)
                        .and_then(|i| i.parse().ok())
                        .map(|i| (i, a))
                })
                .collect();
            v.sort_by_key(|(i, _)| *i);
            v.into_iter().map(|(_, a)| a).collect()
        };
        assert_eq!(
            arrays.len(),
            keras.len(),
            "{name}: {label}: number of arrays"
        );
        for (i, (ours, theirs)) in arrays.iter().zip(&keras).enumerate() {
            assert_eq!(ours.shape, theirs.shape, "{name}: {label} array {i} shape");
            assert_eq!(ours.data, theirs.data, "{name}: {label} array {i} values");
            assert_eq!(ours.dtype, "float32");
        }
    }
    // Every array in weights.npz was matched to some layer.
    let matched: usize = got.iter().map(|l| arrays_of(&l.kind).len()).sum();
    assert_eq!(matched, c.weights.len(), "{name}: arrays in weights.npz");
    assert_eq!(c.name, name);
    m
}

/// One test per fixture model (a failure names its fixture), each loading with Keras's own weights; and a
/// check that every fixture directory is listed, so none is silently skipped.
macro_rules! loads_with_keras_weights {
    ($($case:ident),* $(,)?) => {
        mod loads_with_keras_weights {
            $(#[test] fn $case() { super::check_case(stringify!($case)); })*
        }

        #[test]
        fn every_fixture_model_is_tested() {
            let listed = [$(stringify!($case)),*];
            let names = all_cases();
            assert!(names.len() >= 15, "fixtures missing: {names:?}");
            for n in names.iter().filter(|n| !REFUSED.contains(&n.as_str())) {
                assert!(listed.contains(&n.as_str()), "fixture model {n} has no load test");
            }
        }
    };
}

loads_with_keras_weights!(
    activation_layer,
    bidir_gru_ave_mul,
    bidir_lstm_concat,
    dropout_masking,
    dropout_masking_last,
    flatten,
    functional_linear,
    functional_masking,
    gru_lstm_stack,
    keras3_legacy_h5,
    keras3_legacy_h5_functional,
    simple_rnn,
    stacked_seed,
    stateful_lstm,
    tf_keras2_functional,
    tf_keras2_hard_sigmoid,
    tf_keras2_old_attributes,
    tf_keras2_zip,
);

#[test]
fn stacked_seed_has_the_seed_architecture() {
    let m = check_case("stacked_seed");
    assert_eq!(m.format, ModelFormat::Keras3Zip);
    assert!(!m.keras2);
    assert_eq!(m.input_shape, [None, Some(32), Some(28)]);
    assert_eq!(m.layers[0].class_name, "InputLayer");
    let kinds: Vec<&str> = m.compute_layers().map(|l| l.class_name.as_str()).collect();
    assert_eq!(kinds, ["LSTM", "LSTM", "Dense"]);
    let LayerKind::Recurrent(first) = &m.layers[1].kind else {
        panic!("not recurrent")
    };
    assert_eq!((first.features, first.units), (28, 5));
    assert!(first.return_sequences);
    let LayerKind::Dense {
        activation, bias, ..
    } = &m.layers[3].kind
    else {
        panic!("not dense")
    };
    assert_eq!(activation, "softmax");
    assert!(
        bias.as_ref().unwrap().data.iter().any(|&b| b != 0.0),
        "trained bias is non-zero"
    );
    assert_eq!(m.output_shape(), Some(&[None, Some(2)][..]));
}

#[test]
fn keras2_files_get_the_keras2_hard_sigmoid() {
    for name in [
        "tf_keras2_hard_sigmoid",
        "tf_keras2_zip",
        "tf_keras2_old_attributes",
    ] {
        let m = check_case(name);
        assert!(m.keras2, "{name}");
        assert!(m.keras_version.starts_with("2."), "{name}");
        let acts: Vec<&str> = m
            .compute_layers()
            .filter_map(|l| match &l.kind {
                LayerKind::Recurrent(r) => Some(r.recurrent_activation.as_str()),
                _ => None,
            })
            .collect();
        assert!(!acts.is_empty());
        assert!(
            acts.iter().all(|a| *a == "hard_sigmoid_keras2"),
            "{name}: {acts:?}"
        );
    }
    let m = check_case("tf_keras2_hard_sigmoid");
    let LayerKind::Recurrent(gru) = &m.layers[2].kind else {
        panic!("not recurrent")
    };
    assert_eq!(gru.cell, RecurrentCell::Gru);
    assert!(!gru.reset_after);
    assert_eq!(gru.bias.as_ref().unwrap().shape, [9]);
    // A Keras 3 file saved as .h5 keeps Keras 3 semantics.
    let m = check_case("keras3_legacy_h5");
    assert!(!m.keras2);
    assert_eq!(m.format, ModelFormat::LegacyH5);
}

#[test]
fn functional_models_follow_their_chain() {
    let m = check_case("functional_linear");
    let names: Vec<&str> = m.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["features", "encoder", "head"]);
    let LayerKind::Recurrent(r) = &m.layers[1].kind else {
        panic!("not recurrent")
    };
    assert!(r.go_backwards);
    let m = check_case("tf_keras2_functional");
    assert_eq!(m.layers[0].name, "series");
    assert!(matches!(m.layers[1].kind, LayerKind::Bidirectional { .. }));
}

#[test]
fn keras3_mask_ops_are_left_out_of_the_chain() {
    // Keras 3 records a functional Masking layer's mask as NotEqual/Any op layers feeding `mask=`.
    let m = check_case("functional_masking");
    let classes: Vec<&str> = m.layers.iter().map(|l| l.class_name.as_str()).collect();
    assert_eq!(
        classes,
        [
            "InputLayer",
            "Masking",
            "LSTM",
            "TimeDistributed",
            "GRU",
            "Dense"
        ]
    );
    let m = check_case("keras3_legacy_h5_functional");
    let reshape = m.layers.iter().find(|l| l.class_name == "Reshape").unwrap();
    assert!(
        matches!(&reshape.kind, LayerKind::Reshape { target_shape } if *target_shape == [-1, 1])
    );
    assert_eq!(
        reshape.output_shape.as_deref(),
        Some(&[None, Some(10), Some(1)][..])
    );
}

#[test]
fn unsupported_layers_load_and_are_refused_by_run_with_the_supported_list() {
    let c = case("unsupported_conv1d");
    let m = load(&c.file).unwrap();
    assert!(
        matches!(m.layers[1].kind, LayerKind::Conv1D { .. }),
        "{:?}",
        m.layers[1].kind
    );
    m.check_runnable().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let seed = members(&fixtures().join("stacked_seed/model.keras"));
    let odd = with_config(&seed, |c| {
        c["config"]["layers"][1]["class_name"] = Value::from("Conv7D");
    });
    let m = load(&temp_file(&dir, "odd.keras", &write_zip(&odd))).unwrap();
    assert!(matches!(m.layers[1].kind, LayerKind::Unsupported));
    let e = m.check_runnable().unwrap_err().to_string();
    assert!(
        e.contains(
            "(Conv7D): Conv7D is not a layer rnntrace computes; supported: InputLayer, LSTM"
        ),
        "{e}"
    );
    assert!(e.starts_with(&dir.path().display().to_string()), "{e}");
}

#[test]
fn branching_functional_models_load_as_graphs() {
    let c = case("functional_branching");
    let m = load(&c.file).unwrap();
    let g = m.graph.as_ref().expect("a graph");
    let add = m.layers.iter().position(|l| l.class_name == "Add").unwrap();
    let from: Vec<&str> = g.calls[add]
        .args
        .iter()
        .map(|s| m.layers[s.layer].name.as_str())
        .collect();
    assert_eq!(from, ["lstm", "gru"]);
}

// ----- damaged and wrong files -------------------------------------------------------------------

fn temp_file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn load_err(path: &Path) -> String {
    match load(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

/// The members of a .keras archive.
fn members(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).unwrap();
            (f.name().unwrap().to_string(), buf)
        })
        .collect()
}

fn write_zip(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut out);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, data) in members {
            w.start_file(name.as_str(), opts).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
    }
    out.into_inner()
}

fn replace(members: &[(String, Vec<u8>)], name: &str, data: Vec<u8>) -> Vec<(String, Vec<u8>)> {
    members
        .iter()
        .map(|(n, d)| (n.clone(), if n == name { data.clone() } else { d.clone() }))
        .collect()
}

#[test]
fn garbage_and_non_model_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = load_err(&temp_file(&dir, "g.keras", b"hello, not a model"));
    assert!(
        e.contains("neither a Keras .keras archive (zip) nor a Keras .h5"),
        "{e}"
    );
    let e = load_err(&temp_file(&dir, "empty.h5", b""));
    assert!(e.contains("empty"), "{e}");
    let e = load_err(&temp_file(
        &dir,
        "pk.keras",
        b"PK\x03\x04 garbage garbage garbage",
    ));
    assert!(e.contains("not a valid .keras archive"), "{e}");
    let e = load_err(&temp_file(
        &dir,
        "hdf.h5",
        b"\x89HDF\r\n\x1a\n and then nothing useful",
    ));
    assert!(e.contains("not a readable HDF5 file"), "{e}");
    // An .npz is a zip, but not a model.
    let npz = std::fs::read(fixtures().join("simple_rnn/weights.npz")).unwrap();
    let e = load_err(&temp_file(&dir, "w.npz", &npz));
    assert!(e.contains("no config.json") && e.contains(".npz"), "{e}");
    let npy = std::fs::read(fixtures().join("simple_rnn/input.npy")).unwrap();
    let e = load_err(&temp_file(&dir, "x.npy", &npy));
    assert!(e.contains(".npy"), "{e}");
    let e = load_err(dir.path());
    assert!(e.contains("is a directory"), "{e}");
    let e = load_err(&dir.path().join("missing.keras"));
    assert!(e.contains("no such file"), "{e}");
}

#[test]
fn weights_only_files_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let m = members(&fixtures().join("simple_rnn/model.keras"));
    let (_, h5) = m.iter().find(|(n, _)| n == "model.weights.h5").unwrap();
    let e = load_err(&temp_file(&dir, "model.weights.h5", h5));
    assert!(e.contains("weights only"), "{e}");
}

#[test]
fn truncated_files_are_refused_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "stacked_seed/model.keras",
        "tf_keras2_hard_sigmoid/model.h5",
        "keras3_legacy_h5/model.h5",
    ] {
        let bytes = std::fs::read(fixtures().join(name)).unwrap();
        for cut in [
            bytes.len() / 10,
            bytes.len() / 2,
            bytes.len() - 100,
            bytes.len() - 1,
        ] {
            let p = temp_file(&dir, "t.bin", &bytes[..cut]);
            let e = load_err(&p);
            assert!(
                e.starts_with(&p.display().to_string()),
                "{name} cut at {cut}: {e}"
            );
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    // Deterministic byte flips all over the file: every outcome but a panic is acceptable (a flip in
    // padding may leave the model loadable).
    let dir = tempfile::tempdir().unwrap();
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for name in [
        "tf_keras2_functional/model.h5",
        "bidir_lstm_concat/model.keras",
    ] {
        let bytes = std::fs::read(fixtures().join(name)).unwrap();
        // For the archive, corrupt the HDF5 inside it (the zip's CRC would catch flips in the zip).
        let (is_zip, target) = if name.ends_with(".keras") {
            let m = members(&fixtures().join(name));
            let h5 = m
                .iter()
                .find(|(n, _)| n == "model.weights.h5")
                .unwrap()
                .1
                .clone();
            (Some(m), h5)
        } else {
            (None, bytes)
        };
        for _ in 0..150 {
            let mut b = target.clone();
            for _ in 0..1 + next() % 3 {
                let i = (next() as usize) % b.len();
                b[i] ^= (next() % 255 + 1) as u8;
            }
            let file = match &is_zip {
                Some(m) => write_zip(&replace(m, "model.weights.h5", b)),
                None => b,
            };
            let p = temp_file(&dir, "c.bin", &file);
            let _ = load(&p);
        }
    }
}

#[test]
fn missing_and_misshapen_weights_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let seed = members(&fixtures().join("stacked_seed/model.keras"));
    let other = members(&fixtures().join("gru_lstm_stack/model.keras"));
    let other_weights = other
        .iter()
        .find(|(n, _)| n == "model.weights.h5")
        .unwrap()
        .1
        .clone();
    // The seed's architecture with another model's weights: no group for the second LSTM.
    let p = temp_file(
        &dir,
        "mixed.keras",
        &write_zip(&replace(&seed, "model.weights.h5", other_weights)),
    );
    let e = load_err(&p);
    assert!(e.contains("layer 'lstm'") && e.contains("(LSTM)"), "{e}");

    // Units changed in the config: the arrays no longer fit.
    let config = String::from_utf8(
        seed.iter()
            .find(|(n, _)| n == "config.json")
            .unwrap()
            .1
            .clone(),
    )
    .unwrap();
    let changed = config.replacen("\"units\": 5", "\"units\": 6", 1);
    assert_ne!(changed, config);
    let p = temp_file(
        &dir,
        "units.keras",
        &write_zip(&replace(&seed, "config.json", changed.into_bytes())),
    );
    let e = load_err(&p);
    assert!(
        e.contains("layer 'lstm' (LSTM)") && e.contains("kernel (28, 20)") && e.contains("6 units"),
        "{e}"
    );

    // use_bias flipped: three arrays where two were expected.
    let changed = config.replacen("\"use_bias\": true", "\"use_bias\": false", 1);
    let p = temp_file(
        &dir,
        "bias.keras",
        &write_zip(&replace(&seed, "config.json", changed.into_bytes())),
    );
    let e = load_err(&p);
    assert!(e.contains("has 3 weight arrays; expected 2"), "{e}");

    // No weights member at all.
    let without: Vec<(String, Vec<u8>)> = seed
        .iter()
        .filter(|(n, _)| n != "model.weights.h5")
        .cloned()
        .collect();
    let e = load_err(&temp_file(&dir, "now.keras", &write_zip(&without)));
    assert!(e.contains("no model.weights.h5"), "{e}");

    // Broken JSON.
    let p = temp_file(
        &dir,
        "json.keras",
        &write_zip(&replace(
            &seed,
            "config.json",
            b"{\"class_name\": ".to_vec(),
        )),
    );
    let e = load_err(&p);
    assert!(
        e.contains("config.json: model configuration is not valid JSON"),
        "{e}"
    );
}

#[test]
fn a_keras1_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = members(&fixtures().join("simple_rnn/model.keras"));
    let p = temp_file(
        &dir,
        "k1.keras",
        &write_zip(&replace(
            &m,
            "metadata.json",
            br#"{"keras_version": "1.2.2"}"#.to_vec(),
        )),
    );
    assert!(load_err(&p).contains("Keras 1.2.2"));
}

// ----- hostile files: bombs and control characters -----------------------------------------------

/// Patches an uncompressed size in a zip's local header and central directory entry for `name`.
fn patch_declared_size(zip: &mut [u8], name: &str, size: u32) {
    let mut patched = 0;
    for (sig, size_at, name_len_at, name_at) in
        [(b"PK\x03\x04", 22, 26, 30), (b"PK\x01\x02", 24, 28, 46)]
    {
        let mut i = 0;
        while let Some(off) = zip[i..].windows(4).position(|w| w == sig) {
            let at = i + off;
            let name_len = u16::from_le_bytes([zip[at + name_len_at], zip[at + name_len_at + 1]]);
            if zip.get(at + name_at..at + name_at + name_len as usize) == Some(name.as_bytes()) {
                zip[at + size_at..at + size_at + 4].copy_from_slice(&size.to_le_bytes());
                patched += 1;
            }
            i = at + 4;
        }
    }
    assert_eq!(
        patched, 2,
        "{name}: local header and central directory entry"
    );
}

/// A zip whose members are deflated.
fn write_zip_deflated(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut out);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        for (name, data) in members {
            w.start_file(name.as_str(), opts).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
    }
    out.into_inner()
}

/// `data` with every `(from[0], from[1])` pair of little-endian u64s (an HDF5 dataspace's dimensions)
/// replaced by `to`; panics if there is none.
fn patch_dims(data: &[u8], from: [u64; 2], to: [u64; 2]) -> Vec<u8> {
    let pat: Vec<u8> = from.iter().flat_map(|d| d.to_le_bytes()).collect();
    let new: Vec<u8> = to.iter().flat_map(|d| d.to_le_bytes()).collect();
    let mut out = data.to_vec();
    let mut count = 0;
    let mut i = 0;
    while let Some(off) = out[i..].windows(pat.len()).position(|w| w == pat) {
        out[i + off..i + off + new.len()].copy_from_slice(&new);
        count += 1;
        i += off + pat.len();
    }
    assert!(count > 0, "no dimensions {from:?} in the file");
    out
}

fn weights_h5(m: &[(String, Vec<u8>)]) -> Vec<u8> {
    m.iter()
        .find(|(n, _)| n == "model.weights.h5")
        .unwrap()
        .1
        .clone()
}

#[test]
fn a_weights_member_declaring_more_than_the_cap_is_refused_before_inflating() {
    let dir = tempfile::tempdir().unwrap();
    let seed = members(&fixtures().join("stacked_seed/model.keras"));
    let mut zip = write_zip(&seed);
    patch_declared_size(&mut zip, "model.weights.h5", 0xC000_0000);
    let e = load_err(&temp_file(&dir, "declared.keras", &zip));
    assert!(
        e.contains(
            "model.weights.h5 inflates to 3.0 GiB (3221225472 bytes, as the archive declares)"
        ) && e.contains("more than the 1.0 GiB rnntrace accepts"),
        "{e}"
    );
}

#[test]
fn a_weights_member_inflating_past_its_declared_size_is_cut_off() {
    // A real weights file followed by 4 MiB of zeros (which deflate squeezes ~1000:1), in a member whose
    // headers claim only the weights file's size.
    let dir = tempfile::tempdir().unwrap();
    let seed = members(&fixtures().join("stacked_seed/model.keras"));
    let h5 = weights_h5(&seed);
    let mut padded = h5.clone();
    padded.resize(h5.len() + (4 << 20), 0);
    let mut zip = write_zip_deflated(&replace(&seed, "model.weights.h5", padded));
    assert!(zip.len() < 100 << 10, "{}", zip.len());
    patch_declared_size(&mut zip, "model.weights.h5", h5.len() as u32);
    let e = load_err(&temp_file(&dir, "lying.keras", &zip));
    // The zip crate may notice first; either way, no more than the declared size is inflated.
    assert!(
        e.contains(&format!(
            "model.weights.h5 inflates past the {} bytes its header declares",
            h5.len()
        )) || e
            .contains("model.weights.h5 cannot be decompressed: File is larger than its declared"),
        "{e}"
    );
}

#[test]
fn a_zero_padded_weights_member_is_bounded_and_spilled_to_disk() {
    let seed = members(&fixtures().join("stacked_seed/model.keras"));
    let h5 = weights_h5(&seed);
    let mut padded = h5.clone();
    padded.resize(h5.len() + (3 << 20), 0);
    let zip_bytes = write_zip_deflated(&replace(&seed, "model.weights.h5", padded.clone()));
    let open = |cap: u64, in_memory: u64| {
        let mut zip = zip::ZipArchive::new(Cursor::new(&zip_bytes)).unwrap();
        keras3::open_weights_with(&mut zip, zip_bytes.len() as u64, cap, in_memory)
    };
    // Over the cap: refused from the declared size, nothing inflated.
    let e = open(1 << 20, 1 << 20).err().unwrap();
    assert!(
        e.contains("model.weights.h5 inflates to 3.0 MiB") && e.contains("more than the 1.0 MiB"),
        "{e}"
    );
    // Under the cap but over the in-memory bound: inflated into a temporary file and read from there.
    let on_disk = open(16 << 20, 1 << 20).unwrap();
    assert!(on_disk.on_disk());
    let in_memory = open(16 << 20, 16 << 20).unwrap();
    assert!(!in_memory.on_disk());
    for h5 in [&on_disk, &in_memory] {
        let info = h5.array_info("layers/lstm/cell/vars/0").unwrap();
        assert_eq!(info.shape, [28, 20]);
        let a = h5.read_array("layers/lstm/cell/vars/0", &[28, 20]).unwrap();
        assert_eq!(a.data.len(), 28 * 20);
    }
    // And the whole model loads from such an archive.
    let dir = tempfile::tempdir().unwrap();
    let m = load(&temp_file(&dir, "padded.keras", &zip_bytes)).unwrap();
    assert_eq!(m.layers.len(), 4);
}

#[test]
fn dataset_shapes_are_checked_against_the_configuration_before_any_data_is_read() {
    // Each kernel's dataspace is patched to a wider shape, but its data is left as it was: reading it
    // would fail ("raw data has N bytes, expected M"), so a shape error proves nothing was read.
    let dir = tempfile::tempdir().unwrap();
    // Legacy .h5 (tf-keras): LSTM(4) kernel (3, 16).
    let h5 = std::fs::read(fixtures().join("tf_keras2_hard_sigmoid/model.h5")).unwrap();
    let p = temp_file(&dir, "wide.h5", &patch_dims(&h5, [3, 16], [3, 1 << 16]));
    let e = load_err(&p);
    assert!(
        e.contains("layer 'lstm' (LSTM): kernel (3, 65536) at model_weights/lstm/lstm/lstm_cell/kernel:0 does not fit"),
        "{e}"
    );
    // A shape no file of this size can hold is refused from the shape alone.
    let p = temp_file(&dir, "huge.h5", &patch_dims(&h5, [3, 16], [3, 1 << 40]));
    let e = load_err(&p);
    assert!(
        e.contains("claims shape (3, 1099511627776), more data than the file can hold"),
        "{e}"
    );
    // Keras 3 weights: LSTM(5) kernel (28, 20).
    let seed = members(&fixtures().join("stacked_seed/model.keras"));
    let wide = patch_dims(&weights_h5(&seed), [28, 20], [28, 1 << 16]);
    let p = temp_file(
        &dir,
        "wide.keras",
        &write_zip(&replace(&seed, "model.weights.h5", wide)),
    );
    let e = load_err(&p);
    assert!(
        e.contains(
            "layer 'lstm' (LSTM): kernel (28, 65536) at layers/lstm/cell/vars/0 does not fit"
        ),
        "{e}"
    );
    let huge = patch_dims(&weights_h5(&seed), [28, 20], [1 << 20, 1 << 20]);
    let p = temp_file(
        &dir,
        "huge.keras",
        &write_zip(&replace(&seed, "model.weights.h5", huge)),
    );
    let e = load_err(&p);
    assert!(e.contains("claims shape (1048576, 1048576)"), "{e}");
}

#[test]
fn an_array_is_read_only_with_the_shape_it_was_checked_for() {
    let seed = members(&fixtures().join("stacked_seed/model.keras"));
    let h5 = h5::H5::from_bytes(weights_h5(&seed)).unwrap();
    let path = "layers/lstm/cell/vars/0";
    let info = h5.array_info(path).unwrap();
    assert_eq!(info.dtype, "float32");
    let e = h5.read_array(path, &[20, 28]).unwrap_err();
    assert!(e.contains("has shape (28, 20); expected (20, 28)"), "{e}");
    let e = h5
        .read_array("layers/lstm/cell/vars/9", &[28, 20])
        .unwrap_err();
    assert!(e.contains("cannot open dataset"), "{e}");
}

#[test]
fn control_characters_are_escaped_for_display() {
    assert_eq!(escape_controls("lstm_1"), "lstm_1");
    assert_eq!(
        escape_controls("a\nb\r\tc\x1b[2J\x07\u{7f}"),
        "a\\nb\\r\\tc\\x1b[2J\\x07\\x7f"
    );
    assert_eq!(
        escape_controls("x\u{202e}y\u{85}z\u{2028}é"),
        "x\\u{202e}y\\u{85}z\\u{2028}é"
    );
    let once = escape_controls("a\nb\\n");
    assert_eq!(escape_controls(&once), once);
}

fn with_config(m: &[(String, Vec<u8>)], edit: impl Fn(&mut Value)) -> Vec<(String, Vec<u8>)> {
    let text = &m.iter().find(|(n, _)| n == "config.json").unwrap().1;
    let mut config: Value = serde_json::from_slice(text).unwrap();
    edit(&mut config);
    replace(m, "config.json", serde_json::to_vec(&config).unwrap())
}

#[test]
fn layer_names_with_control_characters_never_reach_the_model_or_messages_raw() {
    let evil = "lstm\nrnntrace: PASS\x1b[2J\x1b[31m\u{202e}";
    let escaped = "lstm\\nrnntrace: PASS\\x1b[2J\\x1b[31m\\u{202e}";
    let dir = tempfile::tempdir().unwrap();
    let seed = members(&fixtures().join("stacked_seed/model.keras"));
    // Loads (the weights are found by Keras's naming rule), with the name escaped.
    let renamed = with_config(&seed, |c| {
        c["config"]["layers"][1]["config"]["name"] = Value::from(evil);
    });
    let m = load(&temp_file(&dir, "evil.keras", &write_zip(&renamed))).unwrap();
    assert_eq!(m.layers[1].name, escaped);
    for l in &m.layers {
        assert!(!l.name.chars().any(char::is_control), "{:?}", l.name);
    }
    // Refused (an unsupported class, itself with an escape code), with the message escaped.
    let unsupported = with_config(&seed, |c| {
        c["config"]["layers"][1]["config"]["name"] = Value::from(evil);
        c["config"]["layers"][1]["class_name"] = Value::from("Conv1D\x1b[0m");
    });
    let e = load(&temp_file(&dir, "evil2.keras", &write_zip(&unsupported)))
        .unwrap()
        .check_runnable()
        .unwrap_err()
        .to_string();
    assert!(!e.chars().any(char::is_control), "{e:?}");
    assert!(
        e.contains(&format!(
            "layer '{escaped}' (Conv1D\\x1b[0m): Conv1D\\x1b[0m is not a layer"
        )),
        "{e}"
    );
    // A bad weight shape names the layer escaped too.
    let misfit = with_config(&seed, |c| {
        c["config"]["layers"][1]["config"]["name"] = Value::from(evil);
        c["config"]["layers"][1]["config"]["units"] = Value::from(6);
    });
    let e = load_err(&temp_file(&dir, "evil3.keras", &write_zip(&misfit)));
    assert!(!e.chars().any(char::is_control), "{e:?}");
    assert!(e.contains(&format!("layer '{escaped}' (LSTM)")), "{e}");
    // The Keras version is shown by `inspect`: escaped as well.
    let versioned = replace(
        &seed,
        "metadata.json",
        br#"{"keras_version": "3.1\u001b[2J"}"#.to_vec(),
    );
    let m = load(&temp_file(&dir, "ver.keras", &write_zip(&versioned))).unwrap();
    assert_eq!(m.keras_version, "3.1\\x1b[2J");
}

fn stacked_rnn(cells: serde_json::Value) -> config::LayerSpec {
    let config = serde_json::json!({
        "name": "rnn",
        "cell": {"class_name": "StackedRNNCells", "config": {"cells": cells}},
    });
    config::LayerSpec {
        name: "rnn".into(),
        class_name: "RNN".into(),
        config: config.as_object().cloned().unwrap_or_default(),
        weights_key: "rnn".into(),
        registered_name: None,
        stored_name: "rnn".into(),
    }
}

#[test]
fn stacked_cells_name_an_unsupported_cell_and_their_weight_groups() {
    let ok = stacked_rnn(serde_json::json!([
        {"class_name": "LSTMCell", "config": {"units": 2}},
        {"class_name": "SimpleRNNCell", "config": {"units": 2}},
        {"class_name": "LSTMCell", "config": {"units": 2}},
    ]));
    assert_eq!(build::unsupported_reason(&ok), None);
    let bad = stacked_rnn(serde_json::json!([
        {"class_name": "LSTMCell", "config": {"units": 2}},
        {"class_name": "PeepholeCell", "config": {"units": 2}},
    ]));
    let why = build::unsupported_reason(&bad).unwrap_or_default();
    assert!(why.contains("holds a PeepholeCell"), "{why}");
    let empty = stacked_rnn(serde_json::json!([]));
    let why = build::unsupported_reason(&empty).unwrap_or_default();
    assert!(why.contains("holds no cells"), "{why}");
}

fn with_dtype(dtype: serde_json::Value) -> config::LayerSpec {
    let config = serde_json::json!({"name": "lstm", "units": 2, "dtype": dtype});
    config::LayerSpec {
        name: "lstm".into(),
        stored_name: "lstm".into(),
        class_name: "LSTM".into(),
        config: config.as_object().cloned().unwrap_or_default(),
        weights_key: "lstm".into(),
        registered_name: None,
    }
}

#[test]
fn dtype_policies_are_read_from_keras3_tf_keras_and_plain_configs() {
    use crate::cell::DtypePolicy;
    for (dtype, want) in [
        (
            serde_json::json!({"module": "keras", "class_name": "DTypePolicy",
                "config": {"name": "mixed_float16"}, "registered_name": null}),
            Some(DtypePolicy::MixedFloat16),
        ),
        (
            serde_json::json!({"class_name": "Policy", "config": {"name": "mixed_bfloat16"}}),
            Some(DtypePolicy::MixedBfloat16),
        ),
        (serde_json::json!("float16"), Some(DtypePolicy::Float16)),
        (serde_json::json!("bfloat16"), Some(DtypePolicy::Bfloat16)),
        (serde_json::json!("float32"), None),
        (
            serde_json::json!({"class_name": "DTypePolicy", "config": {"name": "float32"}}),
            None,
        ),
    ] {
        let l = with_dtype(dtype.clone());
        assert_eq!(build::layer_policy(&l), want, "{dtype}");
        assert_eq!(build::policy_refusal(&l), None, "{dtype}");
    }
}

#[test]
fn other_dtype_policies_are_refused_by_name() {
    for name in ["float64", "int8_from_mixed_float16", "float8_from_float32"] {
        let l =
            with_dtype(serde_json::json!({"class_name": "DTypePolicy", "config": {"name": name}}));
        assert_eq!(build::layer_policy(&l), None, "{name}");
        let why = build::policy_refusal(&l).unwrap_or_default();
        assert!(
            why.contains(&format!(
                "its dtype policy is '{name}', which rnntrace does not emulate"
            )) && why.contains("set_global_policy(\"float32\")"),
            "{why}"
        );
    }
}

/// A whole-`bfloat16` Keras 3 model: its variables are 2-byte opaque HDF5 values marked
/// `dtype="bfloat16"`, read as bfloat16; `without_policies` drops every policy (the layer's and the
/// recurrent's, both directions of a Bidirectional) and keeps the weights.
#[test]
fn bfloat16_variables_are_read_and_policies_dropped() {
    use crate::cell::DtypePolicy;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/explain_float16");
    let m = load(&root.join("bfloat16_gru/model.keras")).unwrap();
    let gru = m.layers.iter().find(|l| l.class_name == "GRU").unwrap();
    assert_eq!(gru.policy, Some(DtypePolicy::Bfloat16));
    let LayerKind::Recurrent(r) = &gru.kind else {
        panic!("{:?}", gru.kind)
    };
    assert_eq!(r.kernel.dtype, "bfloat16");
    // Every value is a bfloat16: 8 significant bits.
    assert!(
        r.kernel
            .data
            .iter()
            .all(|&v| f64::from(half::bf16::from_f64(v)) == v)
    );
    assert!(r.kernel.data.iter().any(|&v| v != 0.0));
    let plain = m.without_policies();
    assert!(plain.layers.iter().all(|l| l.policy.is_none()));
    let LayerKind::Recurrent(p) = &plain
        .layers
        .iter()
        .find(|l| l.class_name == "GRU")
        .unwrap()
        .kind
    else {
        unreachable!()
    };
    assert_eq!(p.policy, None);
    assert_eq!(p.kernel.data, r.kernel.data);
    let bi = load(&root.join("float16_bidirectional_lstm/model.keras")).unwrap();
    let plain = bi.without_policies();
    for l in &plain.layers {
        if let LayerKind::Bidirectional {
            forward, backward, ..
        } = &l.kind
        {
            assert_eq!((forward.policy, backward.policy), (None, None));
        }
    }
    assert!(
        bi.layers
            .iter()
            .any(|l| l.policy == Some(DtypePolicy::Float16))
    );
}
