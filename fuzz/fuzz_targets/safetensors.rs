//! Any bytes as a safetensors file.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = rnntrace::io::safetensors::parse(data);
});
