//! Any bytes as a JSON weights file, through parsing and Keras-layout validation for both cells.
#![no_main]
use rnntrace::weights::keras::{ResetAfter, from_arrays};
use rnntrace::weights::{CellKind, load_arrays};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("rnntrace-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("w.json");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(arrays) = load_arrays(&path, &["kernel", "recurrent_kernel", "bias"]) {
        for kind in [CellKind::Lstm, CellKind::Gru] {
            let _ = from_arrays(kind, &arrays, ResetAfter::Auto);
            let _ = rnntrace::weights::pytorch::from_state_dict(kind, &arrays, 0, false);
        }
    }
});
