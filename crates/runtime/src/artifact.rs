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

/// The entry points of an artifact (`NAME_create`, `NAME_run`, ...).
#[derive(Clone, Copy)]
pub struct Api {
    pub create: CreateFn,
    pub run: RunFn,
    pub output_len: OutputLenFn,
    pub destroy: DestroyFn,
    pub error_string: ErrorStringFn,
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
            }
        };
        Ok(Artifact { api })
    }

    /// Wraps the functions of a statically linked artifact.
    ///
    /// # Safety
    /// The functions must be one artifact's `NAME_create`, `NAME_run`, `NAME_output_len`,
    /// `NAME_destroy` and `NAME_error_string`.
    pub unsafe fn from_api(api: Api) -> Artifact {
        Artifact { api }
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
            // SAFETY: error_string returns a static NUL-terminated string.
            let msg = unsafe { CStr::from_ptr((self.art.api.error_string)(rc)) };
            return Err(RuntimeError::Run(msg.to_string_lossy().into_owned()));
        }
        Ok(out)
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: the handle came from create and is destroyed once.
        unsafe { (self.art.api.destroy)(self.handle) }
    }
}
