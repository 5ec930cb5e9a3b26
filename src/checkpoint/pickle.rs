//! A restricted pickle reader: just enough of the pickle virtual machine to rebuild the
//! `data.pkl` of a `torch.save` state dict, and nothing that runs code.
//!
//! Python's unpickler resolves any `module.name` global and calls it; that is how a malicious
//! checkpoint runs `os.system`. Here a global is looked up in a short allow-list of names whose
//! meaning is fixed and purely structural (`collections.OrderedDict`, the tensor and parameter
//! rebuild functions, storage classes, dtypes). Their "calls" are interpreted by this module;
//! every other global, and every opcode outside protocol 2–5's data opcodes, is an error naming it.
//!
//! Containers live in an arena ([`Pickle::objs`]) and values refer to them by index, so memoised
//! containers mutated after being stored (`EMPTY_DICT, BINPUT, …, SETITEMS`) stay shared as in
//! Python, and a hostile pickle with cycles or very deep nesting cannot overflow the stack when
//! it is dropped.

use std::collections::HashMap;
use std::rc::Rc;

use anyhow::{anyhow, bail, Result};
use crate::dtype::FileDtype;

#[derive(Clone, Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer outside i64 (kept only so that unrelated entries don't stop a load).
    BigInt,
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    /// Index into [`Pickle::objs`].
    Obj(usize),
    Global(Global),
}

/// The only globals a checkpoint may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    RebuildParameterWithState,
    /// `torch.FloatStorage` etc.: the element type of a persistent storage.
    Storage(FileDtype),
    /// `torch.float32` etc., when a checkpoint stores a dtype as a value.
    Dtype(FileDtype),
}

#[derive(Debug)]
pub enum Obj {
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Items in insertion order; a key set twice appears twice (the later one wins, as in Python).
    Dict(Vec<(Value, Value)>),
    Set(Vec<Value>),
    Storage(Storage),
    Tensor(Tensor),
}

/// A storage named by a persistent id: the zip entry `<archive>/data/<key>`.
#[derive(Clone, Debug)]
pub struct Storage {
    /// Shared with the pickle's string and every tensor of the storage, never copied per use.
    pub key: Rc<str>,
    pub dtype: FileDtype,
    /// Length in elements of `dtype`.
    pub numel: usize,
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, …)`: a strided view of a storage.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub storage: Storage,
    /// In elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    /// In elements.
    pub strides: Vec<usize>,
}

/// A dict's items.
pub type Items = [(Value, Value)];

pub struct Pickle {
    pub objs: Vec<Obj>,
    pub root: Value,
}

impl Pickle {
    pub fn obj(&self, v: &Value) -> Option<&Obj> {
        match v {
            Value::Obj(i) => self.objs.get(*i),
            _ => None,
        }
    }

    pub fn dict(&self, v: &Value) -> Option<&Items> {
        match self.obj(v) {
            Some(Obj::Dict(d)) => Some(d),
            _ => None,
        }
    }

    pub fn tensor(&self, v: &Value) -> Option<&Tensor> {
        match self.obj(v) {
            Some(Obj::Tensor(t)) => Some(t),
            _ => None,
        }
    }

    /// A short human description of a value, for error messages and summaries.
    pub fn describe(&self, v: &Value) -> String {
        match v {
            Value::None => "None".into(),
            Value::Bool(b) => format!("bool {}", if *b { "True" } else { "False" }),
            Value::Int(i) => format!("int {i}"),
            Value::BigInt => "int".into(),
            Value::Float(f) => format!("float {f}"),
            Value::Str(s) => format!("str '{}'", super::shown(s)),
            Value::Bytes(b) => format!("bytes[{}]", b.len()),
            Value::Global(g) => format!("{g:?}"),
            Value::Obj(_) => match self.obj(v) {
                Some(Obj::Tuple(t)) => format!("tuple of {}", t.len()),
                Some(Obj::List(l)) => format!("list of {}", l.len()),
                Some(Obj::Set(s)) => format!("set of {}", s.len()),
                Some(Obj::Storage(_)) => "storage".into(),
                Some(Obj::Tensor(t)) => format!("tensor {:?} {:?}", t.storage.dtype, t.shape),
                Some(Obj::Dict(d)) => {
                    let n = d.iter().filter(|(_, v)| self.tensor(v).is_some()).count();
                    if n > 0 {
                        format!("dict of {} entries, {n} tensors", d.len())
                    } else {
                        format!("dict of {} entries", d.len())
                    }
                }
                None => "?".into(),
            },
        }
    }
}

/// Maps an allowed `module.name` to its meaning; anything else is refused.
fn resolve_global(module: &str, name: &str) -> Result<Global> {
    let storage = |d| Ok(Global::Storage(d));
    let dtype = |d| Ok(Global::Dtype(d));
    match (module, name) {
        ("collections", "OrderedDict") => Ok(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Ok(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Ok(Global::RebuildParameter),
        ("torch._utils", "_rebuild_parameter_with_state") => Ok(Global::RebuildParameterWithState),
        ("torch", "FloatStorage") => storage(FileDtype::F32),
        ("torch", "HalfStorage") => storage(FileDtype::F16),
        ("torch", "BFloat16Storage") => storage(FileDtype::BF16),
        ("torch", "DoubleStorage") => storage(FileDtype::F64),
        ("torch", "LongStorage") => storage(FileDtype::I64),
        ("torch", "IntStorage") => storage(FileDtype::I32),
        ("torch", "ShortStorage") => storage(FileDtype::I16),
        ("torch", "CharStorage") => storage(FileDtype::I8),
        ("torch", "ByteStorage") => storage(FileDtype::U8),
        ("torch", "BoolStorage") => storage(FileDtype::BOOL),
        // What torch 2.x writes for a bare untyped storage: bytes.
        ("torch", "UntypedStorage") | ("torch.storage", "UntypedStorage") => storage(FileDtype::U8),
        ("torch", "float32" | "float") => dtype(FileDtype::F32),
        ("torch", "float16" | "half") => dtype(FileDtype::F16),
        ("torch", "bfloat16") => dtype(FileDtype::BF16),
        ("torch", "float64" | "double") => dtype(FileDtype::F64),
        ("torch", "int64" | "long") => dtype(FileDtype::I64),
        ("torch", "int32" | "int") => dtype(FileDtype::I32),
        ("torch", "int16" | "short") => dtype(FileDtype::I16),
        ("torch", "int8") => dtype(FileDtype::I8),
        ("torch", "uint8") => dtype(FileDtype::U8),
        ("torch", "bool") => dtype(FileDtype::BOOL),
        ("torch", n) if n.ends_with("Storage") => {
            bail!("tensor storage type 'torch.{}' is not supported (only float, half, bfloat16, double, integer and bool tensors)", super::shown(n))
        }
        // Globals whose only use in a pickle is to run code: no advice to load such a file.
        (m, n) if runs_code(m, n) => bail!(
            "global '{}.{}' is not allowed: it runs code when the file is loaded (no code is ever run here); \
             the file is malicious, or not a checkpoint: do not load it in Python",
            super::shown(module),
            super::shown(name)
        ),
        _ => bail!(
            "global '{}.{}' is not allowed: the file holds a Python object beside (or instead of) its tensors, \
             which this reader never loads, as it runs no code from a checkpoint (only the globals that rebuild \
             tensors and state dicts are taken). A training checkpoint often holds such objects (its \
             arguments, an optimizer): if you trust the file, save its state dict alone in Python, e.g. \
             torch.save(torch.load(F, weights_only=False)['state_dict'], 'weights.pt'), or with \
             safetensors.torch.save_file; otherwise it may be malicious",
            super::shown(module),
            super::shown(name)
        ),
    }
}

/// Modules a pickle names only to run code (shell commands, imports, files, the network,
/// attribute-call gadgets): the message for them gives no advice to load the file.
const CODE_MODULES: &[&str] =
    &["os", "posix", "nt", "subprocess", "sys", "runpy", "importlib", "shutil", "socket", "pty", "commands", "webbrowser", "code", "codeop", "ctypes", "pickle", "_pickle", "marshal", "operator"];

/// The builtins that run code or reach files; the others (`set`, `slice`, `frozenset`,
/// `complex`, which `torch.save`'s protocol 2 writes as `__builtin__.*`) are ordinary objects.
const CODE_BUILTINS: &[&str] = &["eval", "exec", "execfile", "compile", "__import__", "getattr", "setattr", "delattr", "open", "input", "breakpoint", "globals", "vars", "apply"];

/// Whether `module.name` is named only to run code (see [`CODE_MODULES`], [`CODE_BUILTINS`]).
fn runs_code(module: &str, name: &str) -> bool {
    match module {
        "builtins" | "__builtin__" => CODE_BUILTINS.contains(&name),
        m => CODE_MODULES.contains(&m.split('.').next().unwrap_or(m)),
    }
}

fn opcode_name(op: u8) -> &'static str {
    match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "unknown",
    }
}

/// At most this many values (stack pushes, memo entries, marks, tensor dimensions) per pickle:
/// far more than any state dict holds (a few per tensor), and a bound on the memory a hostile
/// pickle can make the reader use (each value is a few dozen bytes).
pub const MAX_VALUES: usize = 1 << 23;
/// Storage keys are short (torch writes the storage's index); a longer one is refused.
pub const MAX_KEY_LEN: usize = 256;

struct Machine<'a> {
    /// Values created so far (see [`MAX_VALUES`]).
    values: usize,
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    objs: Vec<Obj>,
}

/// Runs the restricted pickle machine over `data` (a whole `data.pkl`).
pub fn unpickle(data: &[u8]) -> Result<Pickle> {
    let mut m = Machine { values: 0, data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new(), objs: Vec::new() };
    loop {
        let at = m.pos;
        let op = *m.take(1).map_err(|_| anyhow!("the pickle ends without STOP (truncated)"))?.first().unwrap();
        match m.step(op) {
            Ok(true) => {
                let root = m.pop()?;
                return Ok(Pickle { objs: m.objs, root });
            }
            Ok(false) => {}
            Err(e) => bail!("pickle opcode {} (0x{op:02x}) at byte {at}: {e}", opcode_name(op)),
        }
    }
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else { bail!("the pickle is truncated (needs {n} more bytes at byte {})", self.pos) };
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn len64(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| anyhow!("length {n} is too large"))
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().take(1024).position(|&b| b == b'\n') else {
            bail!("unterminated or over-long text line")
        };
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| anyhow!("text line is not UTF-8"))?.to_string();
        self.pos += n + 1;
        Ok(s)
    }

    fn string(&mut self, n: usize) -> Result<Value> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| anyhow!("string is not valid UTF-8"))?;
        Ok(Value::Str(Rc::from(s)))
    }

    fn bytes(&mut self, n: usize) -> Result<Value> {
        Ok(Value::Bytes(Rc::from(self.take(n)?)))
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    /// Counts `n` new values against [`MAX_VALUES`].
    fn spend(&mut self, n: usize) -> Result<()> {
        self.values = self.values.saturating_add(n);
        if self.values > MAX_VALUES {
            bail!("the pickle builds more than {MAX_VALUES} values: no state dict is that large; the file is corrupt or hostile");
        }
        Ok(())
    }

    fn new_obj(&mut self, o: Obj) -> Value {
        self.objs.push(o);
        Value::Obj(self.objs.len() - 1)
    }

    fn pop(&mut self) -> Result<Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            bail!("pops past a MARK (malformed pickle)");
        }
        self.stack.pop().ok_or_else(|| anyhow!("stack underflow (malformed pickle)"))
    }

    fn top(&self) -> Result<&Value> {
        self.stack.last().ok_or_else(|| anyhow!("stack underflow (malformed pickle)"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let m = self.marks.pop().ok_or_else(|| anyhow!("no MARK on the stack (malformed pickle)"))?;
        if m > self.stack.len() {
            bail!("MARK below the stack (malformed pickle)");
        }
        Ok(self.stack.split_off(m))
    }

    fn memo_put(&mut self, k: u64) -> Result<()> {
        let v = self.top()?.clone();
        self.memo.insert(k, v);
        Ok(())
    }

    fn memo_get(&mut self, k: u64) -> Result<()> {
        let v =
            self.memo.get(&k).cloned().ok_or_else(|| anyhow!("memo entry {k} is not defined (malformed pickle)"))?;
        self.push(v);
        Ok(())
    }

    /// Call arguments and persistent ids: short tuples (no allowed call takes more than 7).
    fn tuple_items(&self, v: &Value, what: &str) -> Result<Vec<Value>> {
        match v {
            Value::Obj(i) => match &self.objs[*i] {
                Obj::Tuple(t) if t.len() <= 8 => Ok(t.clone()),
                Obj::Tuple(t) => bail!("{what} has {} items: no allowed call takes that many", t.len()),
                _ => bail!("{what} must be a tuple"),
            },
            _ => bail!("{what} must be a tuple"),
        }
    }

    /// The container at the top of the stack, for in-place mutation.
    fn top_obj_mut(&mut self) -> Result<&mut Obj> {
        let i = match self.top()? {
            Value::Obj(i) => *i,
            other => bail!("expects a container on the stack, found {other:?}"),
        };
        Ok(&mut self.objs[i])
    }

    /// Executes one opcode; true at STOP.
    fn step(&mut self, op: u8) -> Result<bool> {
        // Every opcode adds at most one value to the stack, the memo or the marks; tensor
        // dimensions are counted where they are copied.
        self.spend(1)?;
        match op {
            0x80 => {
                let p = self.u8()?;
                if p > 5 {
                    bail!("pickle protocol {p} is newer than 5");
                }
            }
            0x95 => {
                self.u64()?;
            }
            b'.' => return Ok(true),
            b'}' => {
                let v = self.new_obj(Obj::Dict(Vec::new()));
                self.push(v)
            }
            b']' => {
                let v = self.new_obj(Obj::List(Vec::new()));
                self.push(v)
            }
            b')' => {
                let v = self.new_obj(Obj::Tuple(Vec::new()));
                self.push(v)
            }
            0x8f => {
                let v = self.new_obj(Obj::Set(Vec::new()));
                self.push(v)
            }
            b'(' => self.marks.push(self.stack.len()),
            b't' => {
                let items = self.pop_mark()?;
                let v = self.new_obj(Obj::Tuple(items));
                self.push(v)
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                let v = self.new_obj(Obj::Tuple(items));
                self.push(v)
            }
            b'l' => {
                let items = self.pop_mark()?;
                let v = self.new_obj(Obj::List(items));
                self.push(v)
            }
            0x91 => {
                let items = self.pop_mark()?;
                let v = self.new_obj(Obj::Set(items));
                self.push(v)
            }
            b'd' => {
                let items = self.pop_mark()?;
                let pairs = pairs(items)?;
                let v = self.new_obj(Obj::Dict(pairs));
                self.push(v)
            }
            b'X' => {
                let n = self.u32()? as usize;
                let v = self.string(n)?;
                self.push(v)
            }
            0x8c => {
                let n = self.u8()? as usize;
                let v = self.string(n)?;
                self.push(v)
            }
            0x8d => {
                let n = self.len64()?;
                let v = self.string(n)?;
                self.push(v)
            }
            b'B' => {
                let n = self.u32()? as usize;
                let v = self.bytes(n)?;
                self.push(v)
            }
            b'C' => {
                let n = self.u8()? as usize;
                let v = self.bytes(n)?;
                self.push(v)
            }
            0x8e => {
                let n = self.len64()?;
                let v = self.bytes(n)?;
                self.push(v)
            }
            b'J' => {
                let v = self.u32()? as i32;
                self.push(Value::Int(v as i64))
            }
            b'K' => {
                let v = self.u8()?;
                self.push(Value::Int(v as i64))
            }
            b'M' => {
                let v = self.u16()?;
                self.push(Value::Int(v as i64))
            }
            0x8a | 0x8b => {
                let n = if op == 0x8a { self.u8()? as usize } else { self.u32()? as usize };
                let b = self.take(n)?;
                let v = long_le(b);
                self.push(v)
            }
            b'G' => {
                let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                self.push(Value::Float(v))
            }
            b'N' => self.push(Value::None),
            0x88 => self.push(Value::Bool(true)),
            0x89 => self.push(Value::Bool(false)),
            b'q' => {
                let k = self.u8()? as u64;
                self.memo_put(k)?
            }
            b'r' => {
                let k = self.u32()? as u64;
                self.memo_put(k)?
            }
            0x94 => {
                let k = self.memo.len() as u64;
                self.memo_put(k)?
            }
            b'h' => {
                let k = self.u8()? as u64;
                self.memo_get(k)?
            }
            b'j' => {
                let k = self.u32()? as u64;
                self.memo_get(k)?
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                let g = resolve_global(&module, &name)?;
                self.push(Value::Global(g))
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
                    bail!("module and name must be strings")
                };
                let g = resolve_global(module, name)?;
                self.push(Value::Global(g))
            }
            b'R' => {
                let args = self.pop()?;
                let f = self.pop()?;
                let args = self.tuple_items(&args, "REDUCE arguments")?;
                let v = self.call(&f, args)?;
                self.push(v)
            }
            0x81 | 0x92 => {
                if op == 0x92 {
                    let kwargs = self.pop()?;
                    if !matches!(&kwargs, Value::Obj(i) if matches!(&self.objs[*i], Obj::Dict(d) if d.is_empty())) {
                        bail!("keyword arguments are not supported");
                    }
                }
                let args = self.pop()?;
                let cls = self.pop()?;
                let args = self.tuple_items(&args, "NEWOBJ arguments")?;
                if !matches!(cls, Value::Global(Global::OrderedDict)) || !args.is_empty() {
                    bail!("only OrderedDict() can be instantiated, not {cls:?}");
                }
                let v = self.new_obj(Obj::Dict(Vec::new()));
                self.push(v)
            }
            b'b' => {
                // The state of an OrderedDict is its attributes (a module state dict's
                // `_metadata`), of a parameter its Python attributes: neither matters here,
                // and dropping it runs nothing.
                let _state = self.pop()?;
                match self.top_obj_mut()? {
                    Obj::Dict(_) | Obj::Tensor(_) => {}
                    _ => bail!("BUILD is only accepted on dicts and tensors"),
                }
            }
            b'Q' => {
                let pid = self.pop()?;
                let v = self.persistent_load(&pid)?;
                self.push(v)
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                match self.top_obj_mut()? {
                    Obj::Dict(d) => d.push((k, v)),
                    _ => bail!("SETITEM target is not a dict"),
                }
            }
            b'u' => {
                let items = self.pop_mark()?;
                let p = pairs(items)?;
                match self.top_obj_mut()? {
                    Obj::Dict(d) => d.extend(p),
                    _ => bail!("SETITEMS target is not a dict"),
                }
            }
            b'a' => {
                let v = self.pop()?;
                match self.top_obj_mut()? {
                    Obj::List(l) => l.push(v),
                    _ => bail!("APPEND target is not a list"),
                }
            }
            b'e' => {
                let items = self.pop_mark()?;
                match self.top_obj_mut()? {
                    Obj::List(l) => l.extend(items),
                    _ => bail!("APPENDS target is not a list"),
                }
            }
            0x90 => {
                let items = self.pop_mark()?;
                match self.top_obj_mut()? {
                    Obj::Set(s) => s.extend(items),
                    _ => bail!("ADDITEMS target is not a set"),
                }
            }
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let v = self.top()?.clone();
                self.push(v)
            }
            _ => bail!(
                "this opcode is not supported by the restricted checkpoint reader (it reads protocol 2-5 state dicts; \
                 re-save the checkpoint with a recent PyTorch)"
            ),
        }
        Ok(false)
    }

    fn call(&mut self, f: &Value, args: Vec<Value>) -> Result<Value> {
        let Value::Global(g) = f else { bail!("calls a non-global ({f:?})") };
        match g {
            Global::OrderedDict => {
                if !args.is_empty() {
                    bail!("OrderedDict is only accepted with no arguments");
                }
                Ok(self.new_obj(Obj::Dict(Vec::new())))
            }
            Global::RebuildTensorV2 => {
                if !(6..=7).contains(&args.len()) {
                    bail!("_rebuild_tensor_v2 takes 6 or 7 arguments, got {}", args.len());
                }
                let storage = match &args[0] {
                    Value::Obj(i) => match &self.objs[*i] {
                        Obj::Storage(s) => s.clone(),
                        _ => bail!("_rebuild_tensor_v2: the first argument is not a storage"),
                    },
                    _ => bail!("_rebuild_tensor_v2: the first argument is not a storage"),
                };
                let offset = uint(&args[1], "storage offset")?;
                let shape = self.uints(&args[2], "size")?;
                let strides = self.uints(&args[3], "stride")?;
                if shape.len() != strides.len() {
                    bail!("_rebuild_tensor_v2: size {shape:?} and stride {strides:?} differ in length");
                }
                self.spend(2 * shape.len())?;
                Ok(self.new_obj(Obj::Tensor(Tensor { storage, offset, shape, strides })))
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => {
                let want = if *g == Global::RebuildParameter { 3 } else { 4 };
                if args.len() != want {
                    bail!("{g:?} takes {want} arguments, got {}", args.len());
                }
                match &args[0] {
                    v @ Value::Obj(i) if matches!(self.objs[*i], Obj::Tensor(_)) => Ok(v.clone()),
                    _ => bail!("{g:?}: the first argument is not a tensor"),
                }
            }
            Global::Storage(_) | Global::Dtype(_) => bail!("{g:?} cannot be called"),
        }
    }

    /// torch's persistent id for a storage: `('storage', StorageType, key, location, numel)`.
    fn persistent_load(&mut self, pid: &Value) -> Result<Value> {
        let items = self.tuple_items(pid, "persistent id")?;
        let [Value::Str(tag), Value::Global(Global::Storage(dtype)), key, Value::Str(_location), numel] =
            items.as_slice()
        else {
            bail!("persistent id {} is not a torch storage reference", describe_items(&items))
        };
        if &**tag != "storage" {
            bail!("persistent id kind '{}' is not 'storage'", super::shown(tag));
        }
        let key: Rc<str> = match key {
            // Shared, not copied: a pickle may name one storage many times (through the memo).
            Value::Str(s) => s.clone(),
            Value::Int(i) => Rc::from(i.to_string()),
            _ => bail!("storage key is neither a string nor an int"),
        };
        if key.len() > MAX_KEY_LEN {
            bail!("storage key of {} bytes is too long (torch writes short names; at most {MAX_KEY_LEN})", key.len());
        }
        if key.is_empty() || key.contains(['/', '\\']) || key.contains("..") || key.chars().any(char::is_control) {
            bail!("storage key '{}' is not a plain name", super::shown(&key));
        }
        let numel = uint(numel, "storage size")?;
        Ok(self.new_obj(Obj::Storage(Storage { key, dtype: *dtype, numel })))
    }

    /// A tensor's size or stride. The rank is capped (torch allows 64 dims) before anything is
    /// copied, so a hostile pickle cannot reuse one huge tuple for many tensors.
    fn uints(&self, v: &Value, what: &str) -> Result<Vec<usize>> {
        match v {
            Value::Obj(i) => match &self.objs[*i] {
                Obj::Tuple(t) if t.len() <= 64 => t.iter().map(|x| uint(x, what)).collect(),
                Obj::Tuple(t) => bail!("{what} has {} dimensions (at most 64)", t.len()),
                _ => bail!("{what} must be a tuple"),
            },
            _ => bail!("{what} must be a tuple"),
        }
    }
}

fn describe_items(items: &[Value]) -> String {
    let parts: Vec<String> = items.iter().take(6).map(|v| super::shown(&format!("{v:?}"))).collect();
    format!("({})", parts.join(", "))
}

fn uint(v: &Value, what: &str) -> Result<usize> {
    match v {
        Value::Int(i) if *i >= 0 => usize::try_from(*i).map_err(|_| anyhow!("{what} {i} is too large")),
        _ => bail!("{what} must be a non-negative int, found {}", super::shown(&format!("{v:?}"))),
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        bail!("odd number of items for a dict");
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// A little-endian two's-complement integer (LONG1/LONG4).
fn long_le(b: &[u8]) -> Value {
    if b.is_empty() {
        return Value::Int(0);
    }
    let neg = b[b.len() - 1] & 0x80 != 0;
    let fill = if neg { 0xff } else { 0 };
    // Bytes beyond the 8th must be pure sign extension for the value to fit i64.
    if b.len() > 8 && b[8..].iter().any(|&x| x != fill) || b.len() > 8 && ((b[7] & 0x80 != 0) != neg) {
        return Value::BigInt;
    }
    let mut a = [fill; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    Value::Int(i64::from_le_bytes(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(data: &[u8]) -> String {
        match unpickle(data) {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn scalars_and_containers() {
        // {'a': [1, -2, 300, 70000, 2**40, -2**63, 1.5, None, True, b'xy', (1,)], 'b': 'é'}
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'(', b'X', 1, 0, 0, 0, b'a', b']', b'q', 1, b'('];
        p.extend([b'K', 1, b'J', 0xfe, 0xff, 0xff, 0xff, b'M', 0x2c, 0x01, b'J', 0x70, 0x11, 0x01, 0x00]);
        p.extend([0x8a, 6, 0, 0, 0, 0, 0, 1]);
        p.extend([0x8a, 8, 0, 0, 0, 0, 0, 0, 0, 0x80]);
        p.push(b'G');
        p.extend(1.5f64.to_be_bytes());
        p.extend([b'N', 0x88, b'C', 2, b'x', b'y', b'K', 1, 0x85, b'e']);
        p.extend([b'u']); // {'a': [...]}
        p.extend([0x8c, 1, b'b', b'X', 2, 0, 0, 0, 0xc3, 0xa9, b's', b'.']);
        let pk = unpickle(&p).unwrap();
        let d = pk.dict(&pk.root).unwrap();
        assert_eq!(d.len(), 2);
        let Some(Obj::List(l)) = pk.obj(&d[0].1) else { panic!() };
        let ints: Vec<i64> = l.iter().filter_map(|v| if let Value::Int(i) = v { Some(*i) } else { None }).collect();
        assert_eq!(ints, vec![1, -2, 300, 70000, 1 << 40, i64::MIN]);
        assert!(matches!(l[6], Value::Float(f) if f == 1.5));
        assert!(matches!(l[7], Value::None) && matches!(l[8], Value::Bool(true)));
        assert!(matches!(&l[9], Value::Bytes(b) if &**b == b"xy"));
        assert!(matches!(&d[1].1, Value::Str(s) if &**s == "é"));
    }

    #[test]
    fn memo_shares_mutated_containers() {
        // d = {}; memo[0] = d; l = [d]; d['k'] = 1  -> l[0] sees 'k'
        let p = [
            0x80, 4, b'}', 0x94, b']', 0x94, b'h', 0, b'a', // list [d]
            b'h', 0, 0x8c, 1, b'k', b'K', 1, b's', b'0', // d['k'] = 1 ; pop d
            b'.',
        ];
        let pk = unpickle(&p).unwrap();
        let Some(Obj::List(l)) = pk.obj(&pk.root) else { panic!() };
        assert_eq!(pk.dict(&l[0]).unwrap().len(), 1);
    }

    #[test]
    fn big_ints_do_not_fail() {
        let p = [0x80, 2, 0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.'];
        assert!(matches!(unpickle(&p).unwrap().root, Value::BigInt));
        // Sign-extended negative number longer than 8 bytes still fits.
        let p = [0x80, 2, 0x8a, 9, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, b'.'];
        assert!(matches!(unpickle(&p).unwrap().root, Value::Int(-2)));
    }

    #[test]
    fn code_execution_is_refused() {
        let e = err(b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85R.");
        assert!(e.contains("GLOBAL") && e.contains("'posix.system' is not allowed") && e.contains("do not load it") && !e.contains("weights_only=False"), "{e}");
        // An ordinary object (a training run's arguments, a set as protocol 2 names it) is told
        // how to keep the tensors alone.
        let e = err(b"\x80\x02c__main__\nNamespace\n.");
        assert!(e.contains("'__main__.Namespace'") && e.contains("state dict alone"), "{e}");
        let e = err(b"\x80\x02c__builtin__\nset\n.");
        assert!(e.contains("'__builtin__.set'") && e.contains("state dict alone") && !e.contains("malicious, or not"), "{e}");
        let e = err(b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.");
        assert!(e.contains("STACK_GLOBAL") && e.contains("'builtins.eval'") && e.contains("do not load it"), "{e}");
        // INST and OBJ build arbitrary classes in protocol 0/1.
        let e = err(b"(ios\nsystem\nS'id'\n.");
        assert!(e.contains("INST"), "{e}");
        let e = err(b"\x80\x02(o.");
        assert!(e.contains("OBJ"), "{e}");
        // An allowed global called in a way torch never does.
        let e = err(b"\x80\x02ccollections\nOrderedDict\nK\x01\x85R.");
        assert!(e.contains("OrderedDict is only accepted with no arguments"), "{e}");
        let e = err(b"\x80\x02ctorch\nFloatStorage\n)R.");
        assert!(e.contains("cannot be called"), "{e}");
        let e = err(b"\x80\x02ctorch\nComplexFloatStorage\n.");
        assert!(e.contains("not supported"), "{e}");
    }

    #[test]
    fn malformed_pickles_fail_cleanly() {
        for (p, want) in [
            (&b"\x80\x02}"[..], "without STOP"),
            (b"\x80\x02X\xff\x00\x00\x00ab.", "truncated"),
            (b"\x80\x02h\x07.", "memo entry 7"),
            (b"\x80\x02s.", "underflow"),
            (b"\x80\x02(K\x01s.", "MARK"),
            (b"\x80\x02u.", "no MARK"),
            (b"\x80\x02K\x01K\x02u.", "no MARK"),
            (b"\x80\x02)K\x01a.", "not a list"),
            (b"\x80\x06.", "protocol 6"),
            (b"\x80\x02\x97.", "NEXT_BUFFER"),
            (b"\x80\x02X\x02\x00\x00\x00\xff\xfe.", "UTF-8"),
            (b"", "without STOP"),
        ] {
            let e = err(p);
            assert!(e.contains(want), "{p:?}: {e}");
        }
    }

    /// A pickle that runs more than [`MAX_VALUES`] value-creating opcodes is refused (memory
    /// and time bounded), even when it holds little at any moment.
    #[test]
    fn value_budget_is_enforced() {
        let mut p = vec![0x80, 2];
        for _ in 0..MAX_VALUES / 2 + 1 {
            p.extend(b"N0");
        }
        p.extend(b"N.");
        let e = err(&p);
        assert!(e.contains("more than") && e.contains("values"), "{e}");
        // Just under the budget parses.
        let mut p = vec![0x80, 2];
        for _ in 0..MAX_VALUES / 2 - 4 {
            p.extend(b"N0");
        }
        p.extend(b"N.");
        assert!(matches!(unpickle(&p).unwrap().root, Value::None));
    }

    /// Mutated versions of a real torch pickle either parse or fail with an error; none panics.
    #[test]
    fn mutated_pickles_never_panic() {
        use std::io::Read;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/checkpoints/plain.pt");
        let file = std::fs::read(path).unwrap();
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(&file[..])).unwrap();
        let mut pkl = Vec::new();
        z.by_name("plain/data.pkl").unwrap().read_to_end(&mut pkl).unwrap();
        unpickle(&pkl).unwrap();
        let seed = crate::testutil::fresh_seed();
        eprintln!("seed {seed} (a panic below is a bug; DIFFVSR_TEST_SEED replays it)");
        let mut rng = crate::rng::Rng::new(seed);
        for _ in 0..3000 {
            let mut m = pkl.clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(m.len() as u32) as usize;
                match rng.below(3) {
                    0 => m[at] = rng.below(256) as u8,
                    1 => m.truncate(at),
                    _ => {
                        m.remove(at);
                    }
                }
                if m.is_empty() {
                    break;
                }
            }
            let _ = unpickle(&m);
        }
    }

    #[test]
    fn tensor_rebuild() {
        // _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', 6), 1, (2, 2), (1, 2), False, OrderedDict())
        let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage".to_vec();
        p.extend(b"ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQ");
        p.extend(b"K\x01K\x02K\x02\x86K\x01K\x02\x86\x89ccollections\nOrderedDict\n)RtR.");
        let pk = unpickle(&p).unwrap();
        let t = pk.tensor(&pk.root).unwrap();
        assert_eq!((&*t.storage.key, t.storage.dtype, t.storage.numel), ("0", FileDtype::F32, 6));
        assert_eq!((t.offset, t.shape.clone(), t.strides.clone()), (1, vec![2, 2], vec![1, 2]));
        // A storage key that tries to escape the archive's data folder.
        let at = p.windows(5).position(|w| w == b"\x01\x00\x00\x000").unwrap();
        let bad = [&p[..at], b"\x04\x00\x00\x00../x", &p[at + 5..]].concat();
        let e = err(&bad);
        assert!(e.contains("not a plain name"), "{e}");
    }
}
