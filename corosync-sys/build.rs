//! Generates the corosync FFI (cpg, quorum, votequorum, cmap) with bindgen.

fn main() {
    for lib in ["cpg", "quorum", "votequorum", "cmap"] {
        println!("cargo:rustc-link-lib={lib}");
    }
    println!("cargo:rerun-if-changed=wrapper.h");
    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        // Without allowlists corotypes.h drags in all of netinet/pthread (~6.8k lines).
        .allowlist_function("(cpg|quorum|votequorum|cmap)_.*")
        .allowlist_type("(cpg|quorum|votequorum|cmap|cs)_.*")
        .allowlist_var("(CPG|QUORUM|VOTEQUORUM|CMAP|CS)_.*")
        // Rustified enums are UB when C returns an unlisted value; constants are not.
        .default_enum_style(bindgen::EnumVariation::ModuleConsts)
        .derive_default(true)
        .layout_tests(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen over <corosync/*.h> failed (need libclang-dev and libcpg-dev libquorum-dev libvotequorum-dev libcmap-dev)");
    let out =
        std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("corosync.rs");
    bindings.write_to_file(out).expect("write bindings");
}
