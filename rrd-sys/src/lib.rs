//! pmxcfs's RRD file writing: every node keeps the history graphs of all nodes, guests and
//! storages in `/var/lib/rrdcached/db/pve-{node,vm,storage}-9.0/<id>`, fed by the status
//! updates pvestatd broadcasts.
//!
//! The file format is librrd's: this crate never writes it itself. [`ffi`] is the
//! bindgen layer over Debian's librrd, [`rules`] maps a key and pvestatd's data string to
//! a file and an update argument without any I/O, and [`writer`] does the file work.
#![warn(missing_docs)]
pub mod ffi;
pub mod rules;
pub mod writer;

pub use rules::{parse, schema, Kind, RuleError, Update};
pub use writer::{RrdError, RrdWriter};
