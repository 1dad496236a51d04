//! Raw bindgen output for the parts of `<rrd.h>` and `<rrd_client.h>` (Debian 12's
//! librrd 1.7.2) that the writer uses.
//!
//! Two facts of librrd that the safe layer relies on:
//! - The error string is per thread: `rrd_get_error` reads the calling thread's
//!   `rrd_context` (a pthread key in `rrd_thread_safe.c`), so it must be read on the
//!   thread that made the failing call, before that thread calls librrd again.
//! - The `rrdc_*` calls share one process-wide connection (`default_client`). Each call
//!   takes librrd's own lock, but a connect/update/disconnect sequence is not atomic.
#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    missing_docs
)]
#![allow(clippy::all)]
include!(concat!(env!("OUT_DIR"), "/rrd.rs"));
