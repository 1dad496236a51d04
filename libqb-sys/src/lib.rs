//! Raw bindgen output for libqb's `<qb/qbipcs.h>` (server) and `<qb/qbipcc.h>` (client),
//! as Debian's `libqb-dev` ships them. The daemon's IPC adapter wraps the server side;
//! the tests drive it with the client side, as `PVE::IPCC` does.
#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    missing_docs
)]
#![allow(clippy::all)]
include!(concat!(env!("OUT_DIR"), "/qb.rs"));
