//! Writes the seed corpora: `cargo run --example seeds` from `fuzz/` (see README.md,
//! "Fuzzing"). Existing seeds of the same name are overwritten; nothing else is touched.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, seeds) in helm_guard_fuzz::seeds::all() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, data) in seeds {
            std::fs::write(dir.join(name), data)?;
        }
    }
    Ok(())
}
