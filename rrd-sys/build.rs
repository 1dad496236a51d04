//! Generates the librrd FFI (file create/update and the rrdcached client) with bindgen.

fn main() {
    println!("cargo:rustc-link-lib=rrd");
    println!("cargo:rerun-if-changed=wrapper.h");
    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        // rrd.h pulls in stdio, time and rrd_format.h; only what the writer calls is kept.
        .allowlist_function(
            "rrd_create_r|rrd_update_r|rrd_get_error|rrd_clear_error\
             |rrdc_connect|rrdc_update|rrdc_disconnect|rrdc_is_connected",
        )
        // Rustified enums are UB when C returns an unlisted value; constants are not.
        .default_enum_style(bindgen::EnumVariation::ModuleConsts)
        .derive_default(true)
        .layout_tests(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen over <rrd.h> <rrd_client.h> failed (need libclang-dev and librrd-dev)");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("rrd.rs");
    bindings.write_to_file(out).expect("write bindings");
}
