//! Any bytes as an .npz archive.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = rnntrace::io::npz::parse(data);
});
