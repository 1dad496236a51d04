//! Read access to corosync's configuration map (cluster name, node list).
use std::ffi::{CStr, CString};

use super::error::{CsError, Result};
use super::ffi;

/// One `nodelist.node.N` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEntry {
    /// Position N in the node list.
    pub index: u32,
    /// `nodeid`.
    pub nodeid: u32,
    /// `name` (empty when unset).
    pub name: String,
    /// `ring0_addr` (empty when unset).
    pub ring0_addr: String,
}

/// An initialized cmap handle; finalized on drop.
pub struct Cmap {
    handle: ffi::cmap_handle_t,
}

// libcmap's handle database serializes calls.
unsafe impl Send for Cmap {}
unsafe impl Sync for Cmap {}

fn key(k: &str) -> Result<CString> {
    CString::new(k).map_err(|_| CsError::InvalidParam)
}

impl Cmap {
    /// Connect to the local corosync's cmap service.
    pub fn initialize() -> Result<Cmap> {
        let mut handle = 0;
        // SAFETY: out-pointer.
        CsError::check(unsafe { ffi::cmap_initialize(&mut handle) })?;
        Ok(Cmap { handle })
    }

    /// A string value; `Err(NotExist)` when the key is not set.
    pub fn get_string(&self, k: &str) -> Result<String> {
        let k = key(k)?;
        let mut p: *mut std::os::raw::c_char = std::ptr::null_mut();
        // SAFETY: key is NUL-terminated; p receives a malloc'd string we free below.
        CsError::check(unsafe { ffi::cmap_get_string(self.handle, k.as_ptr(), &mut p) })?;
        if p.is_null() {
            return Err(CsError::NotExist);
        }
        // SAFETY: cmap returns a NUL-terminated malloc'd string.
        let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        // SAFETY: allocated by libcmap with malloc, documented to be freed by the caller.
        unsafe { libc::free(p as *mut libc::c_void) };
        Ok(s)
    }

    /// A u32 value; `Err(NotExist)` when the key is not set.
    pub fn get_u32(&self, k: &str) -> Result<u32> {
        let k = key(k)?;
        let mut v = 0;
        // SAFETY: NUL-terminated key, out-pointer.
        CsError::check(unsafe { ffi::cmap_get_uint32(self.handle, k.as_ptr(), &mut v) })?;
        Ok(v)
    }

    /// `totem.cluster_name`.
    pub fn cluster_name(&self) -> Result<String> {
        self.get_string("totem.cluster_name")
    }

    /// Every `nodelist.node.N` entry, N = 0.. until the first missing `nodeid`.
    pub fn nodelist(&self) -> Result<Vec<NodeEntry>> {
        let mut out = Vec::new();
        for index in 0u32.. {
            let nodeid = match self.get_u32(&format!("nodelist.node.{index}.nodeid")) {
                Ok(id) => id,
                Err(CsError::NotExist) => break,
                Err(e) => return Err(e),
            };
            let opt = |f: &str| match self.get_string(&format!("nodelist.node.{index}.{f}")) {
                Ok(s) => Ok(s),
                Err(CsError::NotExist) => Ok(String::new()),
                Err(e) => Err(e),
            };
            out.push(NodeEntry {
                index,
                nodeid,
                name: opt("name")?,
                ring0_addr: opt("ring0_addr")?,
            });
        }
        Ok(out)
    }
}

impl Drop for Cmap {
    fn drop(&mut self) {
        // SAFETY: our handle.
        let rc = unsafe { ffi::cmap_finalize(self.handle) };
        if let Err(e) = CsError::check(rc) {
            tracing::debug!("cmap_finalize: {e}");
        }
    }
}
