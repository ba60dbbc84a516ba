/*!
Streaming, atomic `.npz` output, written in one pass.

A trace's per-step arrays grow together, a few steps at a time, but a zip stores its members one after the
other. Since every array's final size is known before the first step, the archive is laid out up front
(each member's local header, `.npy` header and data at a fixed offset) and blocks are written in place
with positioned writes, each member's CRC-32 computed as its bytes go by. Headers and the central directory
are written last, then the file is renamed into place; on error the temporary file is removed. Members are
stored (uncompressed: `np.load` maps them directly, and the write runs at disk speed); archives past 4 GiB
use Zip64 records. The `zip` crate cannot interleave members, hence this writer.
*/

use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

struct Entry {
    name: Vec<u8>,
    local_offset: u64,
    data_offset: u64,
    /// `.npy` header plus array bytes.
    size: u64,
    written: u64,
    crc: crc32fast::Hasher,
    /// The `.npy` header, written with the first data (or at the end, for an empty array).
    header: Option<Vec<u8>>,
}

/// An `.npz` being written.
pub struct NpzStream {
    target: PathBuf,
    tmp: super::temp::TempOut,
    entries: Vec<Entry>,
    end: u64,
    zip64: bool,
    /// Set at the first write: from then on offsets are fixed.
    frozen: bool,
}

/// Identifies a member of the archive.
#[derive(Debug, Clone, Copy)]
pub struct ArrayId(usize);

const LOCAL_HEADER: u64 = 30;
const ZIP64_EXTRA: u64 = 20;

impl NpzStream {
    /// Starts an archive that will be renamed to `target` when finished.
    pub fn new(target: &Path) -> Result<NpzStream> {
        super::write::check_output(target)?;
        let tmp = super::temp::create(target)?;
        Ok(NpzStream {
            target: target.to_path_buf(),
            tmp,
            entries: Vec::new(),
            end: 0,
            zip64: false,
            frozen: false,
        })
    }

    fn err(&self, e: std::io::Error) -> Error {
        Error::output(&self.target, super::io_reason(&e))
    }

    /// Declares an array of `descr` (`<f4`, `<f8`, `|b1`, `<i8`) and `shape`, whose C-order bytes
    /// (`item_bytes` each) will be appended in order. Declare every streamed array before appending.
    pub fn declare(
        &mut self,
        name: &str,
        descr: &str,
        shape: &[usize],
        item_bytes: usize,
    ) -> Result<ArrayId> {
        let header = super::npy::header(descr, false, shape);
        let bytes = shape
            .iter()
            .try_fold(item_bytes as u64, |a, &d| a.checked_mul(d as u64));
        let Some(bytes) = bytes else {
            return Err(Error::output(
                &self.target,
                format!("array {name} is too large to write"),
            ));
        };
        let size = header.len() as u64 + bytes;
        let name = format!("{name}.npy").into_bytes();
        let extra = if self.zip64 { ZIP64_EXTRA } else { 0 };
        let local_offset = self.end;
        let data_offset = local_offset + LOCAL_HEADER + extra + name.len() as u64;
        self.end = data_offset + size;
        self.entries.push(Entry {
            name,
            local_offset,
            data_offset,
            size,
            written: 0,
            crc: crc32fast::Hasher::new(),
            header: Some(header),
        });
        Ok(ArrayId(self.entries.len() - 1))
    }

    /// Fixes the layout at the first write: Zip64 when the declared members (plus room for the small ones
    /// added at the end) could pass 4 GiB.
    fn freeze(&mut self) {
        self.frozen = true;
        if self.end > 0xC000_0000 {
            self.zip64 = true;
            let mut end = 0;
            for e in &mut self.entries {
                e.local_offset = end;
                e.data_offset = end + LOCAL_HEADER + ZIP64_EXTRA + e.name.len() as u64;
                end = e.data_offset + e.size;
            }
            self.end = end;
        }
    }

    fn write_at(&mut self, id: usize, bytes: &[u8]) -> Result<()> {
        let e = &mut self.entries[id];
        if e.written + bytes.len() as u64 > e.size {
            let msg = format!(
                "internal: member {} overflows its declared size",
                String::from_utf8_lossy(&e.name)
            );
            return Err(Error::output(&self.target, msg));
        }
        let at = e.data_offset + e.written;
        e.crc.update(bytes);
        e.written += bytes.len() as u64;
        self.tmp
            .as_file()
            .write_all_at(bytes, at)
            .map_err(|err| self.err(err))
    }

    /// Appends the next bytes of a member.
    pub fn append(&mut self, id: ArrayId, bytes: &[u8]) -> Result<()> {
        self.append_all(&[(id, bytes)])
    }

    /// Appends the next bytes of several members: the CRCs are computed on one core while the other
    /// writes, both straight from the caller's buffers.
    pub fn append_all(&mut self, parts: &[(ArrayId, &[u8])]) -> Result<()> {
        if !self.frozen {
            self.freeze();
        }
        for &(id, _) in parts {
            if let Some(h) = self.entries[id.0].header.take() {
                self.write_at(id.0, &h)?;
            }
        }
        let mut at = Vec::with_capacity(parts.len());
        for &(id, bytes) in parts {
            let e = &mut self.entries[id.0];
            if e.written + bytes.len() as u64 > e.size {
                let msg = format!(
                    "internal: member {} overflows its declared size",
                    String::from_utf8_lossy(&e.name)
                );
                return Err(Error::output(&self.target, msg));
            }
            at.push(e.data_offset + e.written);
            e.written += bytes.len() as u64;
        }
        let (entries, file) = (&mut self.entries, self.tmp.as_file());
        let ((), written) = rayon::join(
            || {
                for &(id, bytes) in parts {
                    entries[id.0].crc.update(bytes);
                }
            },
            || -> std::io::Result<()> {
                for (&(_, bytes), &offset) in parts.iter().zip(&at) {
                    file.write_all_at(bytes, offset)?;
                }
                Ok(())
            },
        );
        written.map_err(|err| self.err(err))
    }

    /// Adds a complete small member.
    pub fn add(&mut self, name: &str, descr: &str, shape: &[usize], bytes: &[u8]) -> Result<()> {
        let item = bytes.len() / shape.iter().product::<usize>().max(1);
        let id = self.declare(name, descr, shape, item.max(1))?;
        self.append(id, bytes)
    }

    /// Writes headers and the central directory, and renames the archive into place.
    pub fn finish(mut self) -> Result<()> {
        if !self.frozen {
            self.freeze();
        }
        for i in 0..self.entries.len() {
            if let Some(h) = self.entries[i].header.take() {
                self.write_at(i, &h)?;
            }
        }
        if !self.zip64 && self.end > u32::MAX as u64 - 1 {
            return Err(Error::output(
                &self.target,
                "the trace outgrew the 4 GiB zip layout chosen for it; record less (--record states) or fewer sequences",
            ));
        }
        for e in &self.entries {
            if e.written != e.size {
                let msg = format!(
                    "internal: member {} has {} of {} bytes",
                    String::from_utf8_lossy(&e.name),
                    e.written,
                    e.size
                );
                return Err(Error::output(&self.target, msg));
            }
        }
        let f: &File = self.tmp.as_file();
        let mut central = Vec::new();
        let (ver, max32) = if self.zip64 {
            (45u16, 0xFFFF_FFFFu32)
        } else {
            (20u16, 0)
        };
        for e in &self.entries {
            let crc = e.crc.clone().finalize();
            let size32 = if self.zip64 { max32 } else { e.size as u32 };
            let mut local = Vec::with_capacity(64);
            local.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
            local.extend_from_slice(&ver.to_le_bytes());
            local.extend_from_slice(&[0, 0, 0, 0]); // flags, method: stored
            local.extend_from_slice(&[0, 0, 0x21, 0]); // time 00:00, date 1980-01-01
            local.extend_from_slice(&crc.to_le_bytes());
            local.extend_from_slice(&size32.to_le_bytes());
            local.extend_from_slice(&size32.to_le_bytes());
            local.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            local.extend_from_slice(
                &(if self.zip64 { ZIP64_EXTRA as u16 } else { 0 }).to_le_bytes(),
            );
            local.extend_from_slice(&e.name);
            if self.zip64 {
                local.extend_from_slice(&1u16.to_le_bytes());
                local.extend_from_slice(&16u16.to_le_bytes());
                local.extend_from_slice(&e.size.to_le_bytes());
                local.extend_from_slice(&e.size.to_le_bytes());
            }
            f.write_all_at(&local, e.local_offset)
                .map_err(|err| self.err(err))?;

            central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            central.extend_from_slice(&ver.to_le_bytes()); // made by
            central.extend_from_slice(&ver.to_le_bytes()); // needed
            central.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x21, 0]);
            central.extend_from_slice(&crc.to_le_bytes());
            central.extend_from_slice(&size32.to_le_bytes());
            central.extend_from_slice(&size32.to_le_bytes());
            central.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            central.extend_from_slice(&(if self.zip64 { 28u16 } else { 0 }).to_le_bytes());
            central.extend_from_slice(&[0; 8]); // comment len, disk, internal attrs, external attrs (2 of 4)
            central.extend_from_slice(&[0; 2]);
            let off32 = if self.zip64 {
                max32
            } else {
                e.local_offset as u32
            };
            central.extend_from_slice(&off32.to_le_bytes());
            central.extend_from_slice(&e.name);
            if self.zip64 {
                central.extend_from_slice(&1u16.to_le_bytes());
                central.extend_from_slice(&24u16.to_le_bytes());
                central.extend_from_slice(&e.size.to_le_bytes());
                central.extend_from_slice(&e.size.to_le_bytes());
                central.extend_from_slice(&e.local_offset.to_le_bytes());
            }
        }
        let cd_offset = self.end;
        let n = self.entries.len() as u64;
        let mut tail = central;
        let cd_size = tail.len() as u64;
        if self.zip64 {
            let eocd64 = cd_offset + cd_size;
            tail.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
            tail.extend_from_slice(&44u64.to_le_bytes());
            tail.extend_from_slice(&45u16.to_le_bytes());
            tail.extend_from_slice(&45u16.to_le_bytes());
            tail.extend_from_slice(&[0; 8]);
            tail.extend_from_slice(&n.to_le_bytes());
            tail.extend_from_slice(&n.to_le_bytes());
            tail.extend_from_slice(&cd_size.to_le_bytes());
            tail.extend_from_slice(&cd_offset.to_le_bytes());
            tail.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
            tail.extend_from_slice(&0u32.to_le_bytes());
            tail.extend_from_slice(&eocd64.to_le_bytes());
            tail.extend_from_slice(&1u32.to_le_bytes());
        }
        let n16 = if self.zip64 { 0xFFFF } else { n as u16 };
        tail.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        tail.extend_from_slice(&[0; 4]);
        tail.extend_from_slice(&n16.to_le_bytes());
        tail.extend_from_slice(&n16.to_le_bytes());
        tail.extend_from_slice(&(if self.zip64 { max32 } else { cd_size as u32 }).to_le_bytes());
        tail.extend_from_slice(&(if self.zip64 { max32 } else { cd_offset as u32 }).to_le_bytes());
        tail.extend_from_slice(&0u16.to_le_bytes());
        f.write_all_at(&tail, cd_offset)
            .map_err(|err| self.err(err))?;
        super::temp::persist(self.tmp, &self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_members_read_back_with_the_zip_crate_and_our_reader() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.npz");
        let mut s = NpzStream::new(&p).unwrap();
        let a = s.declare("gates/i", "<f4", &[2, 3], 4).unwrap();
        let b = s.declare("state/h", "<f4", &[2, 1], 4).unwrap();
        for t in 0..2 {
            let row: Vec<u8> = (0..3)
                .flat_map(|j| ((t * 3 + j) as f32).to_le_bytes())
                .collect();
            s.append(a, &row).unwrap();
            s.append(b, &(t as f32 * 10.0).to_le_bytes()).unwrap();
        }
        s.add("metadata", "<i8", &[1], &7i64.to_le_bytes()).unwrap();
        s.finish().unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let arrays = crate::io::npz::parse(&bytes).unwrap();
        assert_eq!(arrays[0].0, "gates/i");
        assert_eq!(arrays[0].1.data, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(arrays[1].1.data, vec![0.0, 10.0]);
        assert_eq!(arrays[2].1.data, vec![7.0]);
        // The zip crate checks CRCs when reading a member through.
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        for i in 0..z.len() {
            let mut m = z.by_index(i).unwrap();
            std::io::copy(&mut m, &mut std::io::sink()).unwrap();
        }
    }

    #[test]
    fn unfinished_archive_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.npz");
        {
            let mut s = NpzStream::new(&p).unwrap();
            let a = s.declare("x", "<f4", &[4], 4).unwrap();
            s.append(a, &[0; 4]).unwrap();
            assert!(s.finish().is_err(), "short member must be an error");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
