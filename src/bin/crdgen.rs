//! Prints or writes the CustomResourceDefinitions generated from the Rust types.
//!
//! `crdgen` prints every CRD as a multi-document YAML stream; `crdgen DIR` writes one file per
//! kind (`DIR/<plural>.phoenix.io.yaml`). `just crds` runs the latter into crds/.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1);
    for crd in phoenix::crd::all() {
        let yaml = phoenix::crd::render_crd_yaml(&crd)?;
        match &out {
            Some(dir) => {
                let name = crd.metadata.name.as_deref().unwrap_or("unnamed");
                std::fs::write(Path::new(dir).join(format!("{name}.yaml")), yaml)?;
            }
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}
