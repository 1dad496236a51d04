//! Generates the libqb IPC FFI (server and client) with bindgen.

fn main() {
    println!("cargo:rustc-link-lib=qb");
    println!("cargo:rerun-if-changed=wrapper.h");
    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .allowlist_function("qb_ipc(s|c)_.*")
        .allowlist_type("qb_ipc.*")
        .allowlist_var("QB_.*")
        // Rustified enums are UB when C returns an unlisted value; constants are not.
        .default_enum_style(bindgen::EnumVariation::ModuleConsts)
        .derive_default(true)
        .layout_tests(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen over <qb/qbipcs.h> failed (need libclang-dev and libqb-dev)");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("qb.rs");
    bindings.write_to_file(out).expect("write bindings");
}
