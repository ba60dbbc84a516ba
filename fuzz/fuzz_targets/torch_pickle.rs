//! Any bytes as a PyTorch `data.pkl` (the restricted unpickler and the tensor walk), and as a whole
//! `torch.save` archive (zip, storages, views checked against storages).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(p) = rnntrace::io::pickle::unpickle(data) {
        let _ = rnntrace::io::pickle::find_tensors(&p);
    }
    let _ = rnntrace::io::pickle::parse_torch_zip(data);
});
