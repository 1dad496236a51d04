//! A libqb IPC client as `PVE::IPCC` is one: `qb_ipcc_connect(name, 1 MiB)`, then one
//! `qb_ipcc_sendv_recv` per request with a 16-byte header and the payload.
use std::ffi::CString;

use libqb_sys as qb;

/// `PVE::IPCC`'s message size (`MAX_MSG_SIZE`).
pub const MAX_MSG: usize = 8192 * 128;

/// One connection.
pub struct IpcClient {
    conn: *mut qb::qb_ipcc_connection_t,
}

impl IpcClient {
    /// Connect to service `name`; `Err(errno)` if the server refuses or is not there.
    pub fn connect(name: &str) -> Result<IpcClient, i32> {
        let n = CString::new(name).expect("name");
        // SAFETY: a valid C string; libqb returns NULL with errno set on failure.
        let conn = unsafe { qb::qb_ipcc_connect(n.as_ptr(), MAX_MSG) };
        if conn.is_null() {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        Ok(IpcClient { conn })
    }

    /// The 16-byte request header for `id` with `len` payload bytes.
    pub fn header(id: i32, len: usize) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&id.to_ne_bytes());
        h[8..12].copy_from_slice(&((16 + len) as i32).to_ne_bytes());
        h
    }

    /// Send request `id` with `payload` and wait for the reply: `(error, body)`.
    pub fn call(&self, id: i32, payload: &[u8]) -> (i32, Vec<u8>) {
        self.call_raw(&Self::header(id, payload.len()), payload)
    }

    /// Send `header` and `payload` as given (a header may lie about the size).
    pub fn call_raw(&self, header: &[u8], payload: &[u8]) -> (i32, Vec<u8>) {
        let iov = [
            qb::iovec {
                iov_base: header.as_ptr() as *mut _,
                iov_len: header.len(),
            },
            qb::iovec {
                iov_base: payload.as_ptr() as *mut _,
                iov_len: payload.len(),
            },
        ];
        let mut buf = vec![0u8; MAX_MSG];
        // SAFETY: the iovecs point at live buffers; `buf` has MAX_MSG bytes.
        let n = unsafe {
            qb::qb_ipcc_sendv_recv(
                self.conn,
                iov.as_ptr(),
                2,
                buf.as_mut_ptr().cast(),
                buf.len(),
                10_000,
            )
        };
        if n < 0 {
            return (n as i32, Vec::new());
        }
        let n = n as usize;
        assert!(n >= 24, "reply shorter than its header: {n}");
        let size = i32::from_ne_bytes(buf[8..12].try_into().unwrap()) as usize;
        let error = i32::from_ne_bytes(buf[16..20].try_into().unwrap());
        assert_eq!(size, n, "the header's size is the reply's");
        (error, buf[24..n].to_vec())
    }

    /// Send request `id` and do not wait for the reply.
    pub fn send_only(&self, id: i32, payload: &[u8]) -> isize {
        let mut m = Self::header(id, payload.len()).to_vec();
        m.extend_from_slice(payload);
        // SAFETY: `m` is a live buffer of its length.
        unsafe { qb::qb_ipcc_send(self.conn, m.as_ptr().cast(), m.len()) }
    }
}

impl Drop for IpcClient {
    fn drop(&mut self) {
        // SAFETY: connected in `connect`, disconnected once.
        unsafe { qb::qb_ipcc_disconnect(self.conn) };
    }
}

/// `pack "Z[256]"`: `s` NUL-padded to 256 bytes.
pub fn z256(s: &str) -> Vec<u8> {
    let mut b = s.as_bytes().to_vec();
    b.resize(256, 0);
    b
}
