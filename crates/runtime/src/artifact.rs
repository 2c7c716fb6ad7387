//! A safe wrapper over a bertc shared library (`libNAME.so`), loaded with `dlopen`, or over
//! the functions of a statically linked one. Every call goes through the artifact's own
//! argument checks; this wrapper adds the buffer sizing and turns error codes into errors.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;
use std::sync::Arc;

use crate::RuntimeError;

type CreateFn = unsafe extern "C" fn(i32) -> *mut c_void;
type RunFn = unsafe extern "C" fn(
    *mut c_void,
    *const i32,
    *const i32,
    *const i32,
    i32,
    i32,
    *mut f32,
    usize,
) -> i32;
type OutputLenFn = unsafe extern "C" fn(i32, i32) -> usize;
type DestroyFn = unsafe extern "C" fn(*mut c_void);
type ErrorStringFn = unsafe extern "C" fn(i32) -> *const c_char;
type MaxSeqFn = unsafe extern "C" fn() -> i32;
type TokenizeFn = unsafe extern "C" fn(
    *const c_char,
    usize,
    *const c_char,
    usize,
    i32,
    *mut i32,
    *mut i32,
    *mut i32,
) -> i32;
type RunTextFn = unsafe extern "C" fn(
    *mut c_void,
    *const *const c_char,
    *const *const c_char,
    i32,
    i32,
    *mut f32,
    usize,
    *mut i32,
) -> i32;

/// The text entry points of an artifact compiled with a tokenizer.
#[derive(Clone, Copy)]
pub struct TextApi {
    pub tokenize: TokenizeFn,
    pub run_text: RunTextFn,
}

/// The entry points of an artifact (`NAME_create`, `NAME_run`, ...).
#[derive(Clone, Copy)]
pub struct Api {
    pub create: CreateFn,
    pub run: RunFn,
    pub output_len: OutputLenFn,
    pub destroy: DestroyFn,
    pub error_string: ErrorStringFn,
    pub max_seq: MaxSeqFn,
    /// `NAME_tokenize` and `NAME_run_text`, when the artifact has a tokenizer.
    pub text: Option<TextApi>,
}

extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *const c_char;
}

const RTLD_NOW: c_int = 2;
const RTLD_LOCAL: c_int = 0;

fn last_dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string owned by libc.
    unsafe {
        let e = dlerror();
        if e.is_null() {
            "unknown dlopen error".into()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

/// A shared library loaded with `dlopen`; it stays loaded for the life of the process.
pub struct Library {
    handle: *mut c_void,
    file: String,
}

impl Library {
    pub fn open(path: &Path) -> Result<Library, RuntimeError> {
        let file = path.display().to_string();
        // a bare file name would make dlopen search the library path instead of this folder
        let path = if path.components().count() == 1 {
            Path::new(".").join(path)
        } else {
            path.to_path_buf()
        };
        let cpath = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
            RuntimeError::Artifact {
                file: file.clone(),
                msg: "path contains a NUL byte".into(),
            }
        })?;
        // SAFETY: dlopen with a valid C string; the handle is never closed, so symbols found
        // in it stay valid for the life of the process.
        let handle = unsafe { dlopen(cpath.as_ptr(), RTLD_NOW | RTLD_LOCAL) };
        if handle.is_null() {
            return Err(RuntimeError::Artifact {
                file,
                msg: last_dl_error(),
            });
        }
        Ok(Library { handle, file })
    }

    /// The address of a symbol.
    pub fn symbol(&self, name: &str) -> Result<*mut c_void, RuntimeError> {
        let err = |msg: String| RuntimeError::Artifact {
            file: self.file.clone(),
            msg,
        };
        let c = CString::new(name).map_err(|_| err("bad symbol name".into()))?;
        // SAFETY: the handle is live and c a valid C string.
        let p = unsafe { dlsym(self.handle, c.as_ptr()) };
        if p.is_null() {
            Err(err(format!("no symbol '{name}'")))
        } else {
            Ok(p)
        }
    }
}

/// A loaded shared library artifact.
pub struct Artifact {
    api: Api,
}

impl Artifact {
    /// Loads `libNAME.so` and finds its entry points; `name` is the symbol prefix (the `-o`
    /// file name given to `bertc compile`).
    pub fn open(path: &Path, name: &str) -> Result<Artifact, RuntimeError> {
        let lib = Library::open(path)?;
        let sym = |s: &str| {
            lib.symbol(&format!("{name}_{s}"))
                .map_err(|_| RuntimeError::Artifact {
                    file: path.display().to_string(),
                    msg: format!(
                        "no symbol '{name}_{s}' (is '{name}' the name given to bertc compile?)"
                    ),
                })
        };
        // SAFETY: the symbols are the artifact's C functions with exactly these signatures
        // (see the generated header).
        let api = unsafe {
            Api {
                create: std::mem::transmute::<*mut c_void, CreateFn>(sym("create")?),
                run: std::mem::transmute::<*mut c_void, RunFn>(sym("run")?),
                output_len: std::mem::transmute::<*mut c_void, OutputLenFn>(sym("output_len")?),
                destroy: std::mem::transmute::<*mut c_void, DestroyFn>(sym("destroy")?),
                error_string: std::mem::transmute::<*mut c_void, ErrorStringFn>(sym(
                    "error_string",
                )?),
                max_seq: std::mem::transmute::<*mut c_void, MaxSeqFn>(sym("max_seq")?),
                text: match (sym("tokenize"), sym("run_text")) {
                    (Ok(t), Ok(r)) => Some(TextApi {
                        tokenize: std::mem::transmute::<*mut c_void, TokenizeFn>(t),
                        run_text: std::mem::transmute::<*mut c_void, RunTextFn>(r),
                    }),
                    _ => None,
                },
            }
        };
        Ok(Artifact { api })
    }

    /// Wraps the functions of a statically linked artifact.
    ///
    /// # Safety
    /// The functions must be one artifact's `NAME_create`, `NAME_run`, `NAME_output_len`,
    /// `NAME_destroy`, `NAME_error_string`, `NAME_max_seq` (and `NAME_tokenize`,
    /// `NAME_run_text`).
    pub unsafe fn from_api(api: Api) -> Artifact {
        Artifact { api }
    }

    /// The longest sequence the artifact runs, in tokens.
    pub fn max_seq(&self) -> usize {
        // SAFETY: max_seq takes nothing and returns a constant.
        unsafe { (self.api.max_seq)() }.max(0) as usize
    }

    fn error(&self, rc: i32) -> String {
        // SAFETY: error_string returns a static NUL-terminated string for any code.
        let msg = unsafe { CStr::from_ptr((self.api.error_string)(rc)) };
        msg.to_string_lossy().into_owned()
    }

    fn text_api(&self) -> Result<TextApi, RuntimeError> {
        self.api.text.ok_or_else(|| {
            RuntimeError::Run(
                "the artifact was compiled without a tokenizer: it takes token ids".into(),
            )
        })
    }

    /// The token ids and type ids of one text, or of a pair, as the artifact's compiled-in
    /// tokenizer gives them (truncated to `max_seq` tokens when `truncate`).
    pub fn tokenize(
        &self,
        text: &str,
        pair: Option<&str>,
        truncate: bool,
    ) -> Result<crate::Encoding, RuntimeError> {
        let t = self.text_api()?;
        let cap = self.max_seq();
        let (mut ids, mut types) = (vec![0i32; cap], vec![0i32; cap]);
        let mut n = 0i32;
        let (pp, pl) = pair.map_or((std::ptr::null(), 0), |p| (p.as_ptr(), p.len()));
        // SAFETY: the texts are valid for their lengths, ids and types hold max_seq values,
        // which is all the tokenizer writes.
        let rc = unsafe {
            (t.tokenize)(
                text.as_ptr().cast(),
                text.len(),
                pp.cast(),
                pl,
                truncate as i32,
                ids.as_mut_ptr(),
                types.as_mut_ptr(),
                &mut n,
            )
        };
        if rc != 0 {
            return Err(RuntimeError::Encode {
                text: text.chars().take(80).collect(),
                msg: self.error(rc),
            });
        }
        let n = n as usize;
        Ok(crate::Encoding {
            ids: ids[..n].iter().map(|&v| v as i64).collect(),
            attention_mask: vec![1; n],
            type_ids: types[..n].iter().map(|&v| v as i64).collect(),
        })
    }

    /// A model instance with its own workspace, using `threads` worker threads (0: all).
    pub fn model(self: &Arc<Self>, threads: i32) -> Result<Model, RuntimeError> {
        // SAFETY: create takes any thread count and returns NULL or a handle.
        let h = unsafe { (self.api.create)(threads) };
        if h.is_null() {
            return Err(RuntimeError::Run("the model could not be created (this CPU lacks the features it was compiled for, or memory is short)".into()));
        }
        Ok(Model {
            art: self.clone(),
            handle: h,
        })
    }
}

/// A model instance. Not shared between threads: create one per thread.
pub struct Model {
    art: Arc<Artifact>,
    handle: *mut c_void,
}

impl Model {
    /// Runs a batch: `ids`, `mask` and `type_ids` are `batch * seq` values, row-major.
    /// Returns the output (`batch * seq * width` or `batch * width` floats).
    pub fn run(
        &mut self,
        ids: &[i32],
        mask: Option<&[i32]>,
        type_ids: Option<&[i32]>,
        batch: usize,
        seq: usize,
    ) -> Result<Vec<f32>, RuntimeError> {
        let n = batch
            .checked_mul(seq)
            .ok_or_else(|| RuntimeError::Run("batch * seq overflows".into()))?;
        let (b, s) = (i32::try_from(batch), i32::try_from(seq));
        let (Ok(b), Ok(s)) = (b, s) else {
            return Err(RuntimeError::Run(
                "batch and seq must fit in 32 bits".into(),
            ));
        };
        for (what, v) in [("ids", Some(ids)), ("mask", mask), ("type_ids", type_ids)] {
            if let Some(v) = v {
                if v.len() != n {
                    return Err(RuntimeError::Run(format!(
                        "{what} has {} values, batch * seq is {n}",
                        v.len()
                    )));
                }
            }
        }
        // SAFETY: output_len is a pure function of its arguments.
        let len = unsafe { (self.art.api.output_len)(b, s) };
        let mut out = vec![0f32; len];
        let p = |v: Option<&[i32]>| v.map_or(std::ptr::null(), |v| v.as_ptr());
        // SAFETY: every pointer is valid for batch * seq values (checked above), out for len
        // floats; the artifact checks everything else and writes at most len floats.
        let rc = unsafe {
            (self.art.api.run)(
                self.handle,
                ids.as_ptr(),
                p(mask),
                p(type_ids),
                b,
                s,
                out.as_mut_ptr(),
                len,
            )
        };
        if rc != 0 {
            return Err(RuntimeError::Run(self.art.error(rc)));
        }
        Ok(out)
    }

    /// Runs texts (or pairs of texts, for a cross-encoder) through the artifact's tokenizer
    /// and model, truncated to `max_seq` tokens. Returns the output (`texts.len() * width`
    /// floats for a pooled output; per-token outputs have `max_seq` rows a text, zero past its
    /// tokens) and each text's token count.
    pub fn run_text(
        &mut self,
        texts: &[&str],
        pairs: Option<&[&str]>,
    ) -> Result<(Vec<f32>, Vec<usize>), RuntimeError> {
        let t = self.art.text_api()?;
        if pairs.is_some_and(|p| p.len() != texts.len()) {
            return Err(RuntimeError::Run(format!(
                "{} texts but {} pair texts",
                texts.len(),
                pairs.map_or(0, <[&str]>::len)
            )));
        }
        let cstrings = |v: &[&str]| -> Result<Vec<CString>, RuntimeError> {
            v.iter()
                .map(|s| {
                    CString::new(*s).map_err(|_| RuntimeError::Encode {
                        text: s.chars().take(80).collect(),
                        msg: "the text contains a NUL byte".into(),
                    })
                })
                .collect()
        };
        let a = cstrings(texts)?;
        let b = pairs.map(cstrings).transpose()?;
        let ap: Vec<*const c_char> = a.iter().map(|c| c.as_ptr()).collect();
        let bp: Option<Vec<*const c_char>> =
            b.as_ref().map(|b| b.iter().map(|c| c.as_ptr()).collect());
        let batch = i32::try_from(texts.len())
            .map_err(|_| RuntimeError::Run("too many texts for one batch".into()))?;
        let seq = self.art.max_seq() as i32;
        // SAFETY: output_len is a pure function of its arguments.
        let len = unsafe { (self.art.api.output_len)(batch, seq) };
        let mut out = vec![0f32; len];
        let mut lengths = vec![0i32; texts.len()];
        // SAFETY: the pointer arrays hold `batch` NUL-terminated strings that outlive the
        // call, out holds len floats and lengths batch values.
        let rc = unsafe {
            (t.run_text)(
                self.handle,
                ap.as_ptr(),
                bp.as_ref().map_or(std::ptr::null(), |b| b.as_ptr()),
                batch,
                1,
                out.as_mut_ptr(),
                len,
                lengths.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(RuntimeError::Run(self.art.error(rc)));
        }
        Ok((out, lengths.into_iter().map(|n| n as usize).collect()))
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: the handle came from create and is destroyed once.
        unsafe { (self.art.api.destroy)(self.handle) }
    }
}
