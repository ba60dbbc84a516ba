//! Any bytes as an .npy file: parse must return an array or an error, never panic or over-allocate.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = rnntrace::io::npy::parse(data);
});
