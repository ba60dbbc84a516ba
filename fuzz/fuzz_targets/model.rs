//! Any bytes as a saved model (.keras zip or legacy .h5): load must return a model or an error.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("rnntrace-fuzz-model-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("m.keras");
    if std::fs::write(&path, data).is_ok() {
        let _ = rnntrace::model::load(&path);
    }
});
