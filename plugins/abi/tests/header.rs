//! The C header is generated from the ABI types and committed; this test
//! fails when the committed copy is stale, so C plugin authors never build
//! against a header that disagrees with the host.

use std::path::Path;

#[test]
fn committed_header_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let path = dir.join("include/alerter_plugin.h");
    if std::env::var_os("ALERTER_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "plugins/abi/include/alerter_plugin.h is stale; regenerate it with\n  ALERTER_BLESS=1 cargo test -p alerter-plugin-abi --test header"
    );
}
