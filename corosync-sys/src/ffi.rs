//! Raw bindgen output for `<corosync/{cpg,quorum,votequorum,cmap}.h>`.
#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    missing_docs
)]
#![allow(clippy::all)]
include!(concat!(env!("OUT_DIR"), "/corosync.rs"));
