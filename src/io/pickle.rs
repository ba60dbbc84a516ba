/*!
PyTorch checkpoints (`torch.save`, zip format): a restricted unpickler for `data.pkl` and the storages it
points at.

Written by hand because no crate reads a pickle without being able to construct arbitrary objects; this one
constructs nothing. It interprets the protocol 2–5 opcodes `torch.save` emits into plain data (ints,
strings, tuples, lists, dicts) held in an arena (values refer to each other by index, so no recursion
anywhere, in parsing, walking or dropping). Globals are an allow-list:

- `torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`, `_rebuild_parameter_with_state`: a tensor view
  (storage, offset, size, stride), checked against its storage;
- `torch.*Storage` / `torch.storage.UntypedStorage` as the storage type of a persistent id
  `('storage', type, key, location, numel)`;
- `collections.OrderedDict`, `builtins.set`/`frozenset`, `torch.Size`, `torch.device`: containers;
- a class (`__main__.Net`, `torch.nn.modules.rnn.LSTM`): recorded as an opaque object whose BUILD state is
  kept as data, so a whole pickled module's `_parameters` can be found without running its code.

Any other global (a function such as `os.system`, anything from `os`, `subprocess`, `builtins`, …) stops
the read with its name. Limits: pickle size, arena size, stack size, mark (nesting) depth, walk depth,
storage sizes against the zip member's real size, and the total number of elements.
*/

use super::RawArray;
use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Read};

/// `data.pkl` larger than this is refused (a state dict's pickle is ~100 bytes per tensor).
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// Values the unpickler may create.
pub const MAX_VALUES: usize = 2_000_000;
/// Items the unpickler may copy in all (REDUCE arguments, set and dict contents): keeps a pickle that
/// reuses one huge tuple through the memo from costing quadratic time.
pub const MAX_WORK: usize = 50_000_000;
/// Dimensions of a tensor.
pub const MAX_DIMS: usize = 64;
/// A dict key longer than this is not a parameter name: the walk skips it (keeps names bounded).
pub const MAX_NAME: usize = 1024;
/// Depth of the value stack.
pub const MAX_STACK: usize = 1_000_000;
/// Open MARKs at once (how deep tuples/lists/dicts may be nested while being built).
pub const MAX_MARKS: usize = 1_000;
/// Nesting depth when looking for tensors (dicts in dicts, modules in modules).
pub const MAX_WALK_DEPTH: usize = 100;
/// Elements in all tensors together (1 GiB as f64).
pub const MAX_ELEMENTS: u64 = 1 << 27;
/// One storage's bytes.
pub const MAX_STORAGE_BYTES: u64 = 1 << 30;

/// The first bytes of a legacy (pre-1.6, non-zip) `torch.save` file: protocol 2, then the magic number
/// 0x1950a86a20f9469cfc6c pickled as a LONG1.
pub const LEGACY_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";

/// Element types of PyTorch storages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
    F16,
    Bf16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Dtype {
    fn from_storage(name: &str) -> Option<Dtype> {
        Some(match name {
            "FloatStorage" => Dtype::F32,
            "DoubleStorage" => Dtype::F64,
            "HalfStorage" => Dtype::F16,
            "BFloat16Storage" => Dtype::Bf16,
            "LongStorage" => Dtype::I64,
            "IntStorage" => Dtype::I32,
            "ShortStorage" => Dtype::I16,
            "CharStorage" => Dtype::I8,
            "ByteStorage" | "UntypedStorage" => Dtype::U8,
            "BoolStorage" => Dtype::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::Bf16 | Dtype::I16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
        }
    }

    /// The PyTorch name, for messages and [`RawArray::dtype`].
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
            Dtype::F16 => "float16",
            Dtype::Bf16 => "bfloat16",
            Dtype::I64 => "int64",
            Dtype::I32 => "int32",
            Dtype::I16 => "int16",
            Dtype::I8 => "int8",
            Dtype::U8 => "uint8",
            Dtype::Bool => "bool",
        }
    }

    /// Decodes one element from exactly `self.size()` bytes.
    pub fn decode(self, b: &[u8], big: bool) -> f64 {
        let mut a = [0u8; 8];
        let n = self.size();
        a[..n].copy_from_slice(&b[..n]);
        if big {
            a[..n].reverse();
        }
        match self {
            Dtype::F32 => f32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
            Dtype::F64 => f64::from_le_bytes(a),
            Dtype::F16 => half::f16::from_le_bytes([a[0], a[1]]).to_f64(),
            Dtype::Bf16 => half::bf16::from_le_bytes([a[0], a[1]]).to_f64(),
            Dtype::I64 => i64::from_le_bytes(a) as f64,
            Dtype::I32 => i32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
            Dtype::I16 => i16::from_le_bytes([a[0], a[1]]) as f64,
            Dtype::I8 => a[0] as i8 as f64,
            Dtype::U8 => a[0] as f64,
            Dtype::Bool => (a[0] != 0) as u8 as f64,
        }
    }
}

/// An allowed global, as the unpickler understands it.
#[derive(Debug, Clone, PartialEq)]
pub enum Global {
    RebuildTensor,
    RebuildParameter,
    StorageType(Dtype),
    OrderedDict,
    Set,
    Size,
    /// A class recorded without being constructed (`module.Name`).
    Class(String),
}

/// Index of a value in the arena.
pub type Id = usize;

/// A value built from the pickle: data only.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too large for i64 (only its size in bytes is kept).
    BigInt(usize),
    Float(f64),
    Str(String),
    Bytes(usize),
    Tuple(Vec<Id>),
    List(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Set(Vec<Id>),
    Global(Global),
    /// A persistent id `('storage', type, key, location, numel)`.
    Storage {
        dtype: Dtype,
        key: String,
        numel: u64,
    },
    /// `_rebuild_tensor_v2(storage, offset, size, stride, …)`.
    Tensor {
        dtype: Dtype,
        key: String,
        numel: u64,
        offset: u64,
        size: Vec<u64>,
        stride: Vec<u64>,
    },
    /// An instance of a class that was never constructed; `state` is what BUILD gave it.
    Object {
        class: String,
        state: Option<Id>,
    },
}

/// The result of unpickling: the arena and the top value.
#[derive(Debug)]
pub struct Pickle {
    pub values: Vec<Value>,
    pub top: Id,
}

/// Modules whose globals are refused even when they look like classes.
const DENIED_MODULES: &[&str] = &[
    "os",
    "posix",
    "nt",
    "subprocess",
    "sys",
    "builtins",
    "__builtin__",
    "shutil",
    "socket",
    "importlib",
    "runpy",
    "pty",
    "ctypes",
    "pickle",
    "_pickle",
    "marshal",
    "types",
    "code",
    "codeop",
    "webbrowser",
    "io",
    "multiprocessing",
    "threading",
    "signal",
    "platform",
    "pathlib",
    "tempfile",
    "functools",
    "operator",
    "copyreg",
    "copy_reg",
    "inspect",
    "asyncio",
    "http",
    "urllib",
    "ssl",
    "select",
    "mmap",
    "gc",
    "weakref",
    "atexit",
    "getattr",
    "eval",
    "exec",
];

fn resolve_global(module: &str, name: &str) -> Result<Global, String> {
    let refuse = || {
        Err(format!(
            "refuses global {module}.{name}: a checkpoint needs only tensor-rebuild globals and containers, and nothing in the file is run; save the weights with torch.save(model.state_dict(), PATH)"
        ))
    };
    match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => return Ok(Global::RebuildTensor),
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            return Ok(Global::RebuildParameter);
        }
        ("collections", "OrderedDict") => return Ok(Global::OrderedDict),
        ("builtins" | "__builtin__", "set" | "frozenset") => return Ok(Global::Set),
        ("torch", "Size") => return Ok(Global::Size),
        ("torch", "device") => return Ok(Global::Class("torch.device".into())),
        ("torch" | "torch.storage", s) if s.ends_with("Storage") => {
            return match Dtype::from_storage(s) {
                Some(d) => Ok(Global::StorageType(d)),
                None => Err(format!(
                    "holds a storage of type {module}.{name}, which rnntrace does not read (float32/64, float16, bfloat16 and integer storages are read)"
                )),
            };
        }
        _ => {}
    }
    let root = module.split('.').next().unwrap_or(module);
    if DENIED_MODULES.contains(&root) || module.is_empty() || name.is_empty() {
        return refuse();
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    let ident = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if last.starts_with(|c: char| c.is_ascii_uppercase())
        && ident(last)
        && module.split('.').all(|p| !p.is_empty() && ident(p))
    {
        // A class: recorded as an opaque object, never constructed.
        return Ok(Global::Class(format!("{module}.{name}")));
    }
    refuse()
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.b.len() - self.pos < n {
            return Err(format!(
                "pickle ends in the middle of an opcode at byte {} (truncated data.pkl)",
                self.pos
            ));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let s = self.take(8)?;
        Ok(u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
    }
    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.b[self.pos..];
        let end = rest
            .iter()
            .take(4096)
            .position(|&c| c == b'\n')
            .ok_or("pickle GLOBAL has no end of line (truncated or not a pickle)")?;
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).map_err(|_| "pickle GLOBAL name is not UTF-8".to_string())
    }
    fn str(&mut self, n: usize) -> Result<String, String> {
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| "pickle string is not UTF-8".to_string())
    }
}

struct Machine {
    values: Vec<Value>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
    work: usize,
}

impl Machine {
    fn charge(&mut self, n: usize) -> Result<(), String> {
        self.work = self.work.saturating_add(n);
        if self.work > MAX_WORK {
            return Err(format!(
                "pickle copies more than {MAX_WORK} items while being read; no checkpoint does"
            ));
        }
        Ok(())
    }
    /// The first `n` items of the tuple `id` (REDUCE arguments), charged to the work budget.
    fn tuple_head(&mut self, id: Id, n: usize, what: &str) -> Result<Vec<Id>, String> {
        let v = match &self.values[id] {
            Value::Tuple(a) => a.iter().take(n).copied().collect::<Vec<_>>(),
            _ => return Err(format!("{what} is not a tuple (corrupt data.pkl)")),
        };
        self.charge(v.len())?;
        Ok(v)
    }
    /// A copy of the items of list/tuple/set `id`, charged to the work budget.
    fn items(&mut self, id: Id) -> Option<Vec<Id>> {
        let v = match &self.values[id] {
            Value::List(v) | Value::Tuple(v) | Value::Set(v) => v.clone(),
            _ => return None,
        };
        self.charge(v.len()).ok()?;
        Some(v)
    }
    fn push(&mut self, v: Value) -> Result<(), String> {
        if self.values.len() >= MAX_VALUES {
            return Err(format!("pickle creates more than {MAX_VALUES} values"));
        }
        self.values.push(v);
        let id = self.values.len() - 1;
        self.push_id(id)
    }
    fn push_id(&mut self, id: Id) -> Result<(), String> {
        if self.stack.len() >= MAX_STACK {
            return Err(format!("pickle stack grows past {MAX_STACK} entries"));
        }
        self.stack.push(id);
        Ok(())
    }
    fn pop(&mut self) -> Result<Id, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("pickle pops from an empty stack (corrupt data.pkl)".into());
        }
        Ok(self.stack.pop().unwrap_or(0))
    }
    fn top(&self) -> Result<Id, String> {
        self.stack
            .last()
            .copied()
            .ok_or_else(|| "pickle reads an empty stack (corrupt data.pkl)".to_string())
    }
    fn pop_mark(&mut self) -> Result<Vec<Id>, String> {
        let m = self
            .marks
            .pop()
            .ok_or("pickle closes a MARK it never opened (corrupt data.pkl)")?;
        Ok(self.stack.split_off(m.min(self.stack.len())))
    }
    fn int(&self, id: Id) -> Option<i64> {
        match &self.values[id] {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }
    fn ints(&self, id: Id, what: &str) -> Result<Vec<u64>, String> {
        match &self.values[id] {
            Value::Tuple(v) | Value::List(v) if v.len() > MAX_DIMS => Err(format!(
                "tensor {what} has {} dimensions; at most {MAX_DIMS} are read",
                v.len()
            )),
            Value::Tuple(v) | Value::List(v) => v
                .iter()
                .map(|&i| match self.int(i) {
                    Some(n) if n >= 0 => Ok(n as u64),
                    _ => Err(format!(
                        "tensor {what} is not a tuple of non-negative integers"
                    )),
                })
                .collect(),
            _ => Err(format!("tensor {what} is not a tuple")),
        }
    }
    fn set_item(&mut self, dict: Id, k: Id, v: Id) -> Result<(), String> {
        match &mut self.values[dict] {
            Value::Dict(items) => {
                items.push((k, v));
                Ok(())
            }
            // A module's state dict attributes via BUILD are dicts; anything else is not a checkpoint.
            _ => {
                Err("pickle sets an item on something that is not a dict (corrupt data.pkl)".into())
            }
        }
    }
    fn append(&mut self, list: Id, items: Vec<Id>) -> Result<(), String> {
        match &mut self.values[list] {
            Value::List(v) | Value::Set(v) => {
                v.extend(items);
                Ok(())
            }
            _ => Err("pickle appends to something that is not a list (corrupt data.pkl)".into()),
        }
    }

    fn persistent(&mut self, pid: Id) -> Result<Value, String> {
        let parts = self.tuple_head(
            pid,
            6,
            "persistent id ('storage', type, key, location, numel)",
        )?;
        let bad = || "persistent id is not ('storage', type, key, location, numel)".to_string();
        if parts.len() != 5 || self.values[parts[0]] != Value::Str("storage".into()) {
            return Err(bad());
        }
        let dtype = match &self.values[parts[1]] {
            Value::Global(Global::StorageType(d)) => *d,
            _ => return Err(bad()),
        };
        let key = match &self.values[parts[2]] {
            Value::Str(s) => s.clone(),
            _ => return Err(bad()),
        };
        let numel = match self.int(parts[4]) {
            Some(n) if n >= 0 => n as u64,
            _ => return Err(bad()),
        };
        Ok(Value::Storage { dtype, key, numel })
    }

    fn reduce(&mut self, f: Id, args: Id) -> Result<Value, String> {
        let args_v = self.tuple_head(args, 8, "REDUCE arguments")?;
        let g = match &self.values[f] {
            Value::Global(g) => g.clone(),
            _ => {
                return Err(
                    "pickle calls something that is not an allowed global (corrupt data.pkl)"
                        .into(),
                );
            }
        };
        match g {
            Global::RebuildTensor => {
                if args_v.len() < 4 {
                    return Err("_rebuild_tensor_v2 has fewer than 4 arguments".into());
                }
                let (dtype, key, numel) = match &self.values[args_v[0]] {
                    Value::Storage { dtype, key, numel } => (*dtype, key.clone(), *numel),
                    _ => return Err("_rebuild_tensor_v2's first argument is not a storage".into()),
                };
                let offset = match self.int(args_v[1]) {
                    Some(n) if n >= 0 => n as u64,
                    _ => return Err("tensor storage offset is not a non-negative integer".into()),
                };
                let size = self.ints(args_v[2], "size")?;
                let stride = self.ints(args_v[3], "stride")?;
                if size.len() != stride.len() {
                    return Err(format!(
                        "tensor has {} dimensions but {} strides",
                        size.len(),
                        stride.len()
                    ));
                }
                Ok(Value::Tensor {
                    dtype,
                    key,
                    numel,
                    offset,
                    size,
                    stride,
                })
            }
            Global::RebuildParameter => match args_v.first().map(|&a| &self.values[a]) {
                Some(t @ Value::Tensor { .. }) => Ok(t.clone()),
                _ => Err("_rebuild_parameter's first argument is not a tensor".into()),
            },
            Global::OrderedDict => {
                let mut items = Vec::new();
                if let Some(&a) = args_v.first() {
                    let pairs = self
                        .items(a)
                        .ok_or("OrderedDict argument is not a list of pairs (or is too large)")?;
                    for p in pairs {
                        match &self.values[p] {
                            Value::Tuple(kv) | Value::List(kv) if kv.len() == 2 => {
                                items.push((kv[0], kv[1]))
                            }
                            _ => return Err("OrderedDict argument is not a list of pairs".into()),
                        }
                    }
                }
                Ok(Value::Dict(items))
            }
            Global::Set => match args_v.first() {
                None => Ok(Value::Set(Vec::new())),
                Some(&a) => self
                    .items(a)
                    .map(Value::Set)
                    .ok_or_else(|| "set argument is not a list (or is too large)".into()),
            },
            Global::Size => match args_v.first() {
                None => Ok(Value::Tuple(Vec::new())),
                Some(&a) => self
                    .items(a)
                    .map(Value::Tuple)
                    .ok_or_else(|| "torch.Size argument is not a tuple (or is too large)".into()),
            },
            Global::Class(class) => Ok(Value::Object { class, state: None }),
            Global::StorageType(_) => Err(
                "pickle calls a storage type directly (only persistent ids may name storages)"
                    .into(),
            ),
        }
    }

    fn new_object(&mut self, cls: Id) -> Result<Value, String> {
        match &self.values[cls] {
            Value::Global(Global::Class(c)) => Ok(Value::Object {
                class: c.clone(),
                state: None,
            }),
            Value::Global(Global::OrderedDict) => Ok(Value::Dict(Vec::new())),
            Value::Global(Global::Set) => Ok(Value::Set(Vec::new())),
            _ => Err("NEWOBJ on something that is not a class (corrupt data.pkl)".into()),
        }
    }

    fn build(&mut self, obj: Id, state: Id) -> Result<(), String> {
        match &mut self.values[obj] {
            Value::Object { state: s, .. } => {
                *s = Some(state);
                Ok(())
            }
            // An OrderedDict's `_metadata`, a parameter's state: attributes nothing here needs.
            Value::Dict(_) | Value::Tensor { .. } | Value::Set(_) | Value::List(_) => Ok(()),
            _ => Err("pickle BUILDs something that is not an object (corrupt data.pkl)".into()),
        }
    }
}

/// Runs the restricted unpickler over `data`.
pub fn unpickle(data: &[u8]) -> Result<Pickle, String> {
    let mut r = Reader { b: data, pos: 0 };
    let mut m = Machine {
        values: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        work: 0,
    };
    loop {
        let at = r.pos;
        let op = r
            .u8()
            .map_err(|_| "pickle ends without a STOP opcode (truncated data.pkl)".to_string())?;
        match op {
            0x80 => {
                let p = r.u8()?;
                if !(2..=5).contains(&p) {
                    return Err(format!(
                        "pickle protocol {p}; torch.save writes protocols 2 to 5"
                    ));
                }
            }
            0x95 => {
                r.u64()?; // FRAME: a size hint only
            }
            b'.' => break,
            b'(' => {
                if m.marks.len() >= MAX_MARKS {
                    return Err(format!(
                        "pickle nests more than {MAX_MARKS} levels deep; no checkpoint does"
                    ));
                }
                m.marks.push(m.stack.len());
            }
            b'N' => m.push(Value::None)?,
            0x88 => m.push(Value::Bool(true))?,
            0x89 => m.push(Value::Bool(false))?,
            b'J' => {
                let v = r.u32()? as i32;
                m.push(Value::Int(v as i64))?
            }
            b'K' => {
                let v = r.u8()?;
                m.push(Value::Int(v as i64))?
            }
            b'M' => {
                let v = r.u16()?;
                m.push(Value::Int(v as i64))?
            }
            0x8a | 0x8b => {
                let n = if op == 0x8a {
                    r.u8()? as usize
                } else {
                    r.u32()? as usize
                };
                let bytes = r.take(n)?;
                if n <= 8 {
                    let mut a = [0u8; 8];
                    a[..n].copy_from_slice(bytes);
                    if n > 0 && bytes[n - 1] & 0x80 != 0 {
                        for b in a.iter_mut().skip(n) {
                            *b = 0xff;
                        }
                    }
                    m.push(Value::Int(i64::from_le_bytes(a)))?
                } else {
                    m.push(Value::BigInt(n))?
                }
            }
            b'G' => {
                let v = f64::from_be_bytes(r.take(8)?.try_into().unwrap_or([0; 8]));
                m.push(Value::Float(v))?
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => r.u32()? as u64,
                    0x8c => r.u8()? as u64,
                    _ => r.u64()?,
                };
                if n > data.len() as u64 {
                    return Err(format!(
                        "pickle string claims {n} bytes past the end of data.pkl"
                    ));
                }
                let s = r.str(n as usize)?;
                m.push(Value::Str(s))?
            }
            b'U' | b'T' | b'C' | b'B' | 0x8e | 0x96 => {
                // SHORT_BINSTRING, BINSTRING, SHORT_BINBYTES, BINBYTES, BINBYTES8, BYTEARRAY8
                let n = match op {
                    b'U' | b'C' => r.u8()? as u64,
                    b'T' | b'B' => r.u32()? as u64,
                    _ => r.u64()?,
                };
                if n > data.len() as u64 {
                    return Err(format!(
                        "pickle bytes claim {n} bytes past the end of data.pkl"
                    ));
                }
                let s = r.take(n as usize)?;
                if op == b'U' || op == b'T' {
                    m.push(Value::Str(String::from_utf8_lossy(s).into_owned()))?
                } else {
                    m.push(Value::Bytes(s.len()))?
                }
            }
            b')' => m.push(Value::Tuple(Vec::new()))?,
            b']' => m.push(Value::List(Vec::new()))?,
            b'}' => m.push(Value::Dict(Vec::new()))?,
            0x8f => m.push(Value::Set(Vec::new()))?,
            b't' => {
                let items = m.pop_mark()?;
                m.push(Value::Tuple(items))?
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(m.pop()?);
                }
                items.reverse();
                m.push(Value::Tuple(items))?
            }
            b'l' => {
                let items = m.pop_mark()?;
                m.push(Value::List(items))?
            }
            b'd' => {
                let items = m.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err("pickle DICT has an odd number of items (corrupt data.pkl)".into());
                }
                m.push(Value::Dict(items.chunks(2).map(|c| (c[0], c[1])).collect()))?
            }
            0x91 => {
                let items = m.pop_mark()?;
                m.push(Value::Set(items))?
            }
            b'a' => {
                let v = m.pop()?;
                let l = m.top()?;
                m.append(l, vec![v])?
            }
            b'e' | 0x90 => {
                let items = m.pop_mark()?;
                let l = m.top()?;
                m.append(l, items)?
            }
            b's' => {
                let v = m.pop()?;
                let k = m.pop()?;
                let d = m.top()?;
                m.set_item(d, k, v)?
            }
            b'u' => {
                let items = m.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err(
                        "pickle SETITEMS has an odd number of items (corrupt data.pkl)".into(),
                    );
                }
                let d = m.top()?;
                for c in items.chunks(2) {
                    m.set_item(d, c[0], c[1])?;
                }
            }
            b'0' => {
                m.pop()?;
            }
            b'1' => {
                m.pop_mark()?;
            }
            b'2' => {
                let t = m.top()?;
                m.push_id(t)?
            }
            b'q' | b'r' | 0x94 => {
                let idx = match op {
                    b'q' => r.u8()? as u32,
                    b'r' => r.u32()?,
                    _ => m.memo.len() as u32,
                };
                if m.memo.len() >= MAX_VALUES && !m.memo.contains_key(&idx) {
                    return Err("pickle memo grows past its limit".into());
                }
                let t = m.top()?;
                m.memo.insert(idx, t);
            }
            b'h' | b'j' => {
                let idx = if op == b'h' { r.u8()? as u32 } else { r.u32()? };
                let id = *m.memo.get(&idx).ok_or_else(|| {
                    format!(
                        "pickle reads memo entry {idx}, which was never stored (corrupt data.pkl)"
                    )
                })?;
                m.push_id(id)?
            }
            b'c' => {
                let module = r.line()?.to_string();
                let name = r.line()?.to_string();
                m.push(Value::Global(resolve_global(&module, &name)?))?
            }
            0x93 => {
                let name = m.pop()?;
                let module = m.pop()?;
                match (&m.values[module], &m.values[name]) {
                    (Value::Str(a), Value::Str(b)) => {
                        let g = resolve_global(a, b)?;
                        m.push(Value::Global(g))?
                    }
                    _ => return Err("STACK_GLOBAL names are not strings (corrupt data.pkl)".into()),
                }
            }
            b'Q' => {
                let pid = m.pop()?;
                let v = m.persistent(pid)?;
                m.push(v)?
            }
            b'R' => {
                let args = m.pop()?;
                let f = m.pop()?;
                let v = m.reduce(f, args)?;
                m.push(v)?
            }
            0x81 => {
                let _args = m.pop()?;
                let cls = m.pop()?;
                let v = m.new_object(cls)?;
                m.push(v)?
            }
            0x92 => {
                let _kwargs = m.pop()?;
                let _args = m.pop()?;
                let cls = m.pop()?;
                let v = m.new_object(cls)?;
                m.push(v)?
            }
            b'b' => {
                let state = m.pop()?;
                let obj = m.top()?;
                m.build(obj, state)?
            }
            b'P' | b'i' | b'o' | b'I' | b'L' | b'F' | b'S' | b'V' | b'p' | b'g' | b'\x82'
            | b'\x83' | b'\x84' => {
                return Err(format!(
                    "pickle opcode 0x{op:02x} at byte {at} ({}) is not one torch.save writes; refused",
                    match op {
                        b'i' | b'o' => "INST/OBJ: constructs an object",
                        b'\x82'..=b'\x84' => "EXT: an extension registry lookup",
                        b'P' => "PERSID text form",
                        _ => "a protocol-0 text opcode",
                    }
                ));
            }
            _ => {
                return Err(format!(
                    "byte 0x{op:02x} at offset {at} of data.pkl is not a pickle opcode (corrupt or not a pickle)"
                ));
            }
        }
    }
    if !m.marks.is_empty() {
        return Err("pickle stops with a MARK still open (corrupt data.pkl)".into());
    }
    let top = match m.stack.as_slice() {
        [t] => *t,
        [] => return Err("pickle stops with nothing on its stack (corrupt data.pkl)".into()),
        s => s[s.len() - 1],
    };
    Ok(Pickle {
        values: m.values,
        top,
    })
}

/// A tensor found in the pickle, before its storage is read.
#[derive(Debug, Clone)]
pub struct TensorRef {
    pub name: String,
    pub dtype: Dtype,
    pub key: String,
    pub numel: u64,
    pub offset: u64,
    pub size: Vec<u64>,
    pub stride: Vec<u64>,
}

/// What the top object of a pickle holds.
#[derive(Debug, Default)]
pub struct Found {
    /// Tensors with their dotted names (`rnn.weight_ih_l0`), in pickle order.
    pub tensors: Vec<TensorRef>,
    /// The class of the top object when the file is a whole pickled module (`__main__.Net`).
    pub module_class: Option<String>,
    /// `batch_first` of each recurrent module found in a whole pickled module, by prefix.
    pub batch_first: Vec<(String, bool)>,
}

/// Walks the pickle for tensors: dicts (str keys, dotted into names), and opaque objects' `_parameters`,
/// `_buffers` and `_modules`. Iterative, with a depth limit and a visited set (memo can make cycles).
pub fn find_tensors(p: &Pickle) -> Result<Found, String> {
    let mut found = Found::default();
    if let Value::Object { class, .. } = &p.values[p.top] {
        found.module_class = Some(class.clone());
    }
    let mut seen = HashSet::new();
    let mut names = HashSet::new();
    let mut todo: Vec<(Id, String, usize)> = vec![(p.top, String::new(), 0)];
    let str_of = |id: Id| match &p.values[id] {
        Value::Str(s) => Some(s.as_str()),
        _ => None,
    };
    while let Some((id, prefix, depth)) = todo.pop() {
        if depth > MAX_WALK_DEPTH {
            return Err(format!(
                "checkpoint nests dicts or modules more than {MAX_WALK_DEPTH} deep"
            ));
        }
        match &p.values[id] {
            Value::Tensor {
                dtype,
                key,
                numel,
                offset,
                size,
                stride,
            } => {
                let name = prefix.trim_end_matches('.').to_string();
                if names.insert(name.clone()) {
                    found.tensors.push(TensorRef {
                        name,
                        dtype: *dtype,
                        key: key.clone(),
                        numel: *numel,
                        offset: *offset,
                        size: size.clone(),
                        stride: stride.clone(),
                    });
                }
            }
            Value::Dict(items) => {
                if !seen.insert(id) {
                    continue;
                }
                for (k, v) in items.iter().rev() {
                    if let Some(k) = str_of(*k).filter(|k| k.len() <= MAX_NAME) {
                        todo.push((*v, format!("{prefix}{k}."), depth + 1));
                    }
                }
            }
            Value::Object { state: Some(s), .. } => {
                if !seen.insert(id) {
                    continue;
                }
                let Value::Dict(attrs) = &p.values[*s] else {
                    continue;
                };
                let attr = |n: &str| {
                    attrs
                        .iter()
                        .find(|(k, _)| str_of(*k) == Some(n))
                        .map(|(_, v)| *v)
                };
                if let Some(bf) = attr("batch_first")
                    && attr("mode").is_some()
                    && let Value::Bool(b) = p.values[bf]
                {
                    found.batch_first.push((prefix.clone(), b));
                }
                let mut push = Vec::new();
                for part in ["_parameters", "_buffers", "_modules"] {
                    if let Some(d) = attr(part)
                        && let Value::Dict(items) = &p.values[d]
                    {
                        for (k, v) in items {
                            if let Some(k) = str_of(*k).filter(|k| k.len() <= MAX_NAME) {
                                push.push((*v, format!("{prefix}{k}."), depth + 1));
                            }
                        }
                    }
                }
                todo.extend(push.into_iter().rev());
            }
            _ => {}
        }
    }
    Ok(found)
}

/// A read `torch.save` checkpoint.
#[derive(Debug)]
pub struct TorchFile {
    pub tensors: Vec<(String, RawArray)>,
    pub module_class: Option<String>,
    pub batch_first: Vec<(String, bool)>,
}

/// True for a zip holding `<dir>/data.pkl` (a `torch.save` zip archive).
pub fn is_torch_zip(bytes: &[u8]) -> bool {
    open_zip(bytes)
        .map(|z| {
            z.file_names()
                .flatten()
                .any(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
        })
        .unwrap_or(false)
}

/// Opens a zip archive. PyTorch's writer always ends with a zip64 end record; on some layouts the zip
/// crate's search for a prefixed archive rejects it, so an archive that starts at byte 0 (every
/// `torch.save` file) is tried with that offset known before the crate's own detection.
fn open_zip(bytes: &[u8]) -> zip::result::ZipResult<zip::ZipArchive<Cursor<&[u8]>>> {
    let known = zip::read::Config {
        archive_offset: zip::read::ArchiveOffset::Known(0),
    };
    zip::ZipArchive::with_config(known, Cursor::new(bytes))
        .or_else(|_| zip::ZipArchive::new(Cursor::new(bytes)))
}

fn read_member(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &str,
    limit: u64,
    want: Option<u64>,
    archive_len: usize,
) -> Result<Vec<u8>, String> {
    let mut member = zip.by_name(name).map_err(|e| {
        format!("archive member '{name}' cannot be read: {e} (truncated or corrupt archive)")
    })?;
    let declared = member.size();
    if let Some(w) = want
        && w != declared
    {
        return Err(format!(
            "storage '{name}' claims {w} bytes but the archive member holds {declared}; refusing it"
        ));
    }
    // Deflate expands at most ~1032:1; a stored member is no larger than the archive.
    let possible = (archive_len as u64).saturating_mul(1032);
    if declared > limit || declared > possible {
        return Err(format!(
            "archive member '{name}' claims {declared} bytes; refusing more than {} (truncated or corrupt archive?)",
            limit.min(possible)
        ));
    }
    let mut buf = Vec::with_capacity(declared as usize);
    (&mut member)
        .take(declared + 1)
        .read_to_end(&mut buf)
        .map_err(|e| {
            format!("archive member '{name}' cannot be read: {e} (truncated or corrupt archive)")
        })?;
    if buf.len() as u64 != declared {
        return Err(format!(
            "archive member '{name}' holds {} bytes, not the {declared} its header declares (truncated archive)",
            buf.len()
        ));
    }
    Ok(buf)
}

/// Reads a `torch.save` zip archive: unpickles `data.pkl`, finds the tensors, reads and checks their storages.
pub fn parse_torch_zip(bytes: &[u8]) -> Result<TorchFile, String> {
    let mut zip = open_zip(bytes)
        .map_err(|e| format!("not a valid PyTorch zip archive: {e} (truncated or corrupt)"))?;
    let pkl = zip
        .file_names()
        .flatten()
        .filter(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
        .min_by_key(|n| n.len())
        .map(|n| n.into_owned())
        .ok_or("zip archive holds no data.pkl: not a torch.save file")?;
    let dir = pkl[..pkl.len() - "data.pkl".len()].to_string();
    let big = match zip.by_name(&format!("{dir}byteorder")) {
        Ok(mut f) => {
            let mut s = String::new();
            (&mut f).take(16).read_to_string(&mut s).ok();
            s.trim() == "big"
        }
        Err(_) => false,
    };
    let data = read_member(&mut zip, &pkl, MAX_PICKLE_BYTES, None, bytes.len())?;
    let pickle = unpickle(&data).map_err(|e| format!("{pkl}: {e}"))?;
    let found = find_tensors(&pickle)?;
    if found.tensors.is_empty() {
        return Err(match &found.module_class {
            Some(c) => format!(
                "is a whole pickled module ({c}) whose parameters cannot be found without running its code; save its state_dict(): torch.save(model.state_dict(), PATH)"
            ),
            None => "holds no tensors: expected a state_dict() saved with torch.save".into(),
        });
    }
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut total = 0u64;
    let mut out = Vec::with_capacity(found.tensors.len());
    for t in &found.tensors {
        let count = t
            .size
            .iter()
            .try_fold(1u64, |a, &s| a.checked_mul(s))
            .filter(|&c| c <= MAX_ELEMENTS)
            .ok_or_else(|| {
                format!(
                    "tensor '{}' has shape {:?}: too many elements",
                    t.name, t.size
                )
            })?;
        total += count;
        if total > MAX_ELEMENTS {
            return Err(format!(
                "tensors hold more than {MAX_ELEMENTS} elements in all; refusing"
            ));
        }
        let storage_bytes = t
            .numel
            .checked_mul(t.dtype.size() as u64)
            .filter(|&b| b <= MAX_STORAGE_BYTES)
            .ok_or_else(|| {
                format!(
                    "tensor '{}' claims a storage of {} {} elements; refusing more than {MAX_STORAGE_BYTES} bytes",
                    t.name,
                    t.numel,
                    t.dtype.name()
                )
            })?;
        if count > 0 {
            // The last element the view reaches must lie inside the storage.
            let last = t
                .size
                .iter()
                .zip(&t.stride)
                .try_fold(t.offset, |a, (&s, &st)| {
                    a.checked_add((s - 1).checked_mul(st)?)
                })
                .ok_or_else(|| format!("tensor '{}' has strides that overflow", t.name))?;
            if last >= t.numel {
                return Err(format!(
                    "tensor '{}' (shape {:?}, strides {:?}, offset {}) reaches element {last} of a storage of {}",
                    t.name, t.size, t.stride, t.offset, t.numel
                ));
            }
        }
        if !storages.contains_key(&t.key) {
            let member = format!("{dir}data/{}", t.key);
            let b = read_member(
                &mut zip,
                &member,
                MAX_STORAGE_BYTES,
                Some(storage_bytes),
                bytes.len(),
            )?;
            storages.insert(t.key.clone(), b);
        }
        let buf = &storages[&t.key];
        if buf.len() as u64 != storage_bytes {
            return Err(format!(
                "storage '{}' is used as {} {} elements but holds {} bytes",
                t.key,
                t.numel,
                t.dtype.name(),
                buf.len()
            ));
        }
        let es = t.dtype.size();
        let mut values = Vec::with_capacity(count as usize);
        let mut idx = vec![0u64; t.size.len()];
        for _ in 0..count {
            let e = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<u64>();
            let at = e as usize * es;
            values.push(t.dtype.decode(&buf[at..at + es], big));
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.size[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        let shape = t.size.iter().map(|&s| s as usize).collect();
        out.push((t.name.clone(), RawArray::new(shape, values, t.dtype.name())));
    }
    Ok(TorchFile {
        tensors: out,
        module_class: found.module_class,
        batch_first: found.batch_first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dict_that_holds_itself_is_walked_once() {
        // {}, memo 0, key 'a', get memo 0, SETITEM: d['a'] = d.
        let p = unpickle(b"\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s.").unwrap();
        let f = find_tensors(&p).unwrap();
        assert!(f.tensors.is_empty());
    }

    #[test]
    fn object_building_opcodes_and_functions_are_refused_by_name() {
        let e = unpickle(b"\x80\x02csubprocess\nPopen\n)R.").unwrap_err();
        assert!(e.contains("refuses global subprocess.Popen"), "{e}");
        let e = unpickle(b"\x80\x02(cos\nsystem\nX\x00\x00\x00\x00o.").unwrap_err();
        assert!(e.contains("os.system"), "{e}");
        let e = unpickle(b"\x80\x02(i__main__\nNet\n.").unwrap_err();
        assert!(e.contains("INST/OBJ"), "{e}");
    }

    #[test]
    fn a_class_is_kept_opaque_and_its_state_is_data() {
        // __main__.Net via NEWOBJ, BUILD with {'_parameters': {}}.
        let p =
            unpickle(b"\x80\x02c__main__\nNet\n)\x81}X\x0b\x00\x00\x00_parameters}sb.").unwrap();
        match &p.values[p.top] {
            Value::Object {
                class,
                state: Some(_),
            } => assert_eq!(class, "__main__.Net"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn deep_marks_stop_at_the_limit_without_recursion() {
        let mut b = b"\x80\x02".to_vec();
        b.extend(std::iter::repeat_n(b'(', 200_000));
        let e = unpickle(&b).unwrap_err();
        assert!(e.contains("more than 1000 levels"), "{e}");
    }
}
