//! `cs_error_t` as a Rust error.
use super::ffi::cs_error_t;

/// Result of a corosync library call.
pub type Result<T> = std::result::Result<T, CsError>;

/// A corosync `cs_error_t` other than `CS_OK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CsError {
    /// `CS_ERR_LIBRARY`: the IPC connection to corosync is gone (daemon died or restarted).
    #[error("corosync library error (daemon gone?)")]
    Library,
    /// `CS_ERR_TRY_AGAIN`: flow control or membership change in progress.
    #[error("corosync asks to try again")]
    TryAgain,
    /// `CS_ERR_TIMEOUT`.
    #[error("corosync timeout")]
    Timeout,
    /// `CS_ERR_INVALID_PARAM`.
    #[error("invalid parameter")]
    InvalidParam,
    /// `CS_ERR_BAD_HANDLE`: the handle was finalized or never valid.
    #[error("bad handle")]
    BadHandle,
    /// `CS_ERR_ACCESS`.
    #[error("access denied")]
    Access,
    /// `CS_ERR_NOT_EXIST`: e.g. a cmap key that is not set.
    #[error("does not exist")]
    NotExist,
    /// `CS_ERR_EXIST`: e.g. joining a group twice.
    #[error("already exists")]
    Exist,
    /// `CS_ERR_TOO_BIG`: message larger than corosync accepts.
    #[error("message too big")]
    TooBig,
    /// `CS_ERR_NO_MEMORY`.
    #[error("out of memory")]
    NoMemory,
    /// `CS_ERR_NOT_SUPPORTED`.
    #[error("not supported")]
    NotSupported,
    /// Any other code, kept raw.
    #[error("corosync error {0}")]
    Other(u32),
}

impl CsError {
    /// Map a raw `cs_error_t` to `Ok(())` for `CS_OK` and an error otherwise.
    pub fn check(rc: cs_error_t::Type) -> Result<()> {
        use cs_error_t::*;
        Err(match rc {
            CS_OK => return Ok(()),
            CS_ERR_LIBRARY => CsError::Library,
            CS_ERR_TRY_AGAIN => CsError::TryAgain,
            CS_ERR_TIMEOUT => CsError::Timeout,
            CS_ERR_INVALID_PARAM => CsError::InvalidParam,
            CS_ERR_BAD_HANDLE => CsError::BadHandle,
            CS_ERR_ACCESS => CsError::Access,
            CS_ERR_NOT_EXIST => CsError::NotExist,
            CS_ERR_EXIST => CsError::Exist,
            CS_ERR_TOO_BIG => CsError::TooBig,
            CS_ERR_NO_MEMORY => CsError::NoMemory,
            CS_ERR_NOT_SUPPORTED => CsError::NotSupported,
            other => CsError::Other(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_codes() {
        assert_eq!(CsError::check(cs_error_t::CS_OK), Ok(()));
        assert_eq!(
            CsError::check(cs_error_t::CS_ERR_TRY_AGAIN),
            Err(CsError::TryAgain)
        );
        assert_eq!(CsError::check(999), Err(CsError::Other(999)));
    }
}
