//! A libqb IPC client as `PVE::IPCC` is one: `qb_ipcc_connect(name, 1 MiB)`, then one
//! `qb_ipcc_sendv_recv` per request with a 16-byte header and the payload.
use std::ffi::CString;

use libqb_sys as qb;

/// `PVE::IPCC`'s message size (`MAX_MSG_SIZE`).
pub const MAX_MSG: usize = 8192 * 128;

/// Size of libqb's response header (`struct qb_ipc_response_header`).
pub const REPLY_HEADER: usize = 24;

/// Why a request got no reply.
#[derive(Debug)]
pub enum Transport {
    /// libqb failed with this negative errno.
    Errno(i32),
    /// The reply does not describe itself.
    Malformed(String),
}

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
        let mut buf = vec![0u8; MAX_MSG];
        match self.call_into(header, payload, &mut buf) {
            Ok((error, body)) => (error, buf[REPLY_HEADER..REPLY_HEADER + body].to_vec()),
            Err(Transport::Errno(n)) => (n, Vec::new()),
            Err(Transport::Malformed(why)) => panic!("{why}"),
        }
    }

    /// One request with the reply read into `buf` (at least [`MAX_MSG`] bytes, reused
    /// by a caller that must not pay for a buffer per request): the reply's error and
    /// the length of its body, which follows the [`REPLY_HEADER`] bytes in `buf`.
    pub fn call_into(
        &self,
        header: &[u8],
        payload: &[u8],
        buf: &mut [u8],
    ) -> Result<(i32, usize), Transport> {
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
        // SAFETY: the iovecs point at live buffers; `buf` is writable for its length.
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
            return Err(Transport::Errno(n as i32));
        }
        let n = n as usize;
        if n < REPLY_HEADER {
            return Err(Transport::Malformed(format!(
                "reply of {n} bytes, shorter than its header"
            )));
        }
        let field = |at: usize| i32::from_ne_bytes(buf[at..at + 4].try_into().unwrap());
        let (size, error) = (field(8) as usize, field(16));
        if size != n {
            return Err(Transport::Malformed(format!(
                "reply header says {size} bytes, got {n}"
            )));
        }
        Ok((error, n - REPLY_HEADER))
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
