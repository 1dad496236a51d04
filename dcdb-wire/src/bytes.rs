//! Little-endian field reading that cannot panic: every read is bounds-checked.

/// A cursor over a payload.
pub(crate) struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Reader { b }
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.b.len() {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.b
    }
}

/// A C string field's bytes with its terminating NUL (`None` = absent, length 0).
pub(crate) fn cstr_len(s: Option<&[u8]>) -> u32 {
    s.map_or(0, |s| len32(s.len()) + 1)
}

/// Lengths are `u32` on the wire; a longer field cannot be sent by pmxcfs either.
pub(crate) fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(crate) fn push_cstr(out: &mut Vec<u8>, s: Option<&[u8]>) {
    if let Some(s) = s {
        out.extend_from_slice(s);
        out.push(0);
    }
}
