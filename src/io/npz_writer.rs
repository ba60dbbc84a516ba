/*!
Streaming, atomic `.npz` output: large arrays are appended step by step to anonymous temporary files beside
the target, then copied into a zip (stored, uncompressed: `np.load` reads it directly, and it is written at
disk speed) that is renamed into place only when complete. Memory stays bounded by the write buffers.
*/

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

struct Entry {
    name: String,
    header: Vec<u8>,
    expected_bytes: u64,
    body: Body,
}

enum Body {
    Small(Vec<u8>),
    Spooled(BufWriter<File>),
}

/// An `.npz` being written.
pub struct NpzStream {
    target: PathBuf,
    dir: PathBuf,
    entries: Vec<Entry>,
}

/// Identifies a streamed array.
#[derive(Debug, Clone, Copy)]
pub struct ArrayId(usize);

impl NpzStream {
    /// Starts an archive that will be written to `target`.
    pub fn new(target: &Path) -> Result<NpzStream> {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(Error::output(
                target,
                format!("folder {} does not exist", dir.display()),
            ));
        }
        if target.is_dir() {
            return Err(Error::output(target, "is a directory"));
        }
        Ok(NpzStream {
            target: target.to_path_buf(),
            dir,
            entries: Vec::new(),
        })
    }

    /// Declares an array of `descr` (`<f4`, `<f8`, `|b1`) and `shape` whose bytes will be appended in C order.
    pub fn stream_array(
        &mut self,
        name: &str,
        descr: &str,
        shape: &[usize],
        item_bytes: usize,
    ) -> Result<ArrayId> {
        let file = tempfile::tempfile_in(&self.dir).map_err(|e| self.err(e))?;
        let expected_bytes = shape.iter().product::<usize>() as u64 * item_bytes as u64;
        self.entries.push(Entry {
            name: name.to_string(),
            header: super::npy::header(descr, false, shape),
            expected_bytes,
            body: Body::Spooled(BufWriter::with_capacity(1 << 20, file)),
        });
        Ok(ArrayId(self.entries.len() - 1))
    }

    /// Adds a complete small array given as raw C-order bytes.
    pub fn add_array(&mut self, name: &str, descr: &str, shape: &[usize], bytes: Vec<u8>) {
        self.entries.push(Entry {
            name: name.to_string(),
            header: super::npy::header(descr, false, shape),
            expected_bytes: bytes.len() as u64,
            body: Body::Small(bytes),
        });
    }

    /// Appends bytes to a streamed array.
    pub fn append(&mut self, id: ArrayId, bytes: &[u8]) -> Result<()> {
        let target = self.target.clone();
        match &mut self.entries[id.0].body {
            Body::Spooled(w) => w
                .write_all(bytes)
                .map_err(|e| Error::output(&target, super::io_reason(&e))),
            Body::Small(v) => {
                v.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    fn err(&self, e: std::io::Error) -> Error {
        Error::output(&self.target, super::io_reason(&e))
    }

    /// Assembles the archive and renames it into place.
    pub fn finish(self) -> Result<()> {
        let NpzStream {
            target,
            dir: _,
            entries,
        } = self;
        let err = |e: std::io::Error| Error::output(&target, super::io_reason(&e));
        super::write::atomic_write(&target, |w| {
            let mut zip = zip::ZipWriter::new_stream(w);
            for e in entries {
                let opts = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored)
                    .large_file(e.expected_bytes + e.header.len() as u64 >= u32::MAX as u64);
                zip.start_file(format!("{}.npy", e.name), opts)
                    .map_err(std::io::Error::other)?;
                zip.write_all(&e.header)?;
                match e.body {
                    Body::Small(v) => zip.write_all(&v)?,
                    Body::Spooled(bw) => {
                        let mut f = bw.into_inner().map_err(|e| e.into_error())?;
                        let len = f.stream_position()?;
                        if len != e.expected_bytes {
                            return Err(std::io::Error::other(format!(
                                "array {} has {len} bytes, expected {}",
                                e.name, e.expected_bytes
                            )));
                        }
                        f.seek(SeekFrom::Start(0))?;
                        let mut buf = vec![0u8; 1 << 20];
                        loop {
                            let n = f.read(&mut buf)?;
                            if n == 0 {
                                break;
                            }
                            zip.write_all(&buf[..n])?;
                        }
                    }
                }
            }
            zip.finish().map_err(std::io::Error::other)?;
            Ok(())
        })
        .map_err(|e| match e {
            Error::Output { what, .. } => err(std::io::Error::other(what)),
            other => other,
        })
    }
}
