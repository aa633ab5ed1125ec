//! The manifests behind `-f`: files, directories (their `.yaml`, `.yml` and `.json` files, sorted)
//! and `-` for stdin, each split into its YAML documents, with the file and index every finding
//! names.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::CliError;

/// The input flags of the commands that read manifests (`render`, `validate`).
#[derive(Debug, Clone, clap::Args)]
pub struct InputArgs {
    /// Manifest files or directories (`-` for stdin).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Also read directories' subdirectories.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Keys of a Secret that `spec.exporters[].headersSecretRef` names, as `SECRET=KEY[,KEY…]`
    /// (the operator reads them from the cluster; offline they must be given; values are never
    /// needed).
    #[arg(long = "secret-key", value_name = "SECRET=KEYS")]
    pub secret_keys: Vec<String>,
}

/// The API group of every Phoenix kind.
pub const GROUP: &str = "phoenix.io";

/// One YAML document of an input file.
#[derive(Debug, Clone)]
pub struct Document {
    /// The file it came from (`-` for stdin).
    pub file: String,
    /// Its position in the file, from 0.
    pub index: usize,
    /// The document as JSON (empty documents are left out).
    pub value: Value,
}

impl Document {
    /// The document's `kind` when its `apiVersion` is in the Phoenix group.
    pub fn phoenix_kind(&self) -> Option<&str> {
        let api_version = self.value.get("apiVersion")?.as_str()?;
        let (group, _) = api_version.split_once('/')?;
        (group == GROUP)
            .then(|| self.value.get("kind")?.as_str())
            .flatten()
    }

    /// `metadata.name`, when there is one.
    pub fn name(&self) -> Option<&str> {
        self.value.get("metadata")?.get("name")?.as_str()
    }
}

/// Every document of every path: a directory contributes its manifest files (recursively with
/// `recursive`), `-` reads stdin.
pub fn read_all(paths: &[PathBuf], recursive: bool) -> Result<Vec<Document>, CliError> {
    let mut documents = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::Input(format!("reading stdin: {e}")))?;
            documents.extend(parse("-", &text)?);
            continue;
        }
        for file in manifest_files(path, recursive)? {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| CliError::Input(format!("reading {}: {e}", file.display())))?;
            documents.extend(parse(&file.display().to_string(), &text)?);
        }
    }
    Ok(documents)
}

/// `path` itself when it is a file; a directory's `.yaml`, `.yml` and `.json` files, sorted.
pub fn manifest_files(path: &Path, recursive: bool) -> Result<Vec<PathBuf>, CliError> {
    let meta =
        std::fs::metadata(path).map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let mut files = Vec::new();
    for entry in entries {
        if entry.is_dir() {
            if recursive {
                files.extend(manifest_files(&entry, true)?);
            }
        } else if entry
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            files.push(entry);
        }
    }
    Ok(files)
}

/// The documents of one file's text; empty documents are skipped but keep their index.
pub fn parse(file: &str, text: &str) -> Result<Vec<Document>, CliError> {
    let mut documents = Vec::new();
    for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(de)
            .map_err(|e| CliError::Input(format!("{file}: document {index}: {e}")))?;
        if !value.is_null() {
            documents.push(Document {
                file: file.to_string(),
                index,
                value,
            });
        }
    }
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_index_and_kind() {
        let docs = parse(
            "f.yaml",
            "apiVersion: v1\nkind: ConfigMap\n---\n---\napiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\n",
        )
        .expect("parses");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].phoenix_kind(), None);
        assert_eq!(docs[1].index, 2);
        assert_eq!(docs[1].phoenix_kind(), Some("Pipeline"));
        assert_eq!(docs[1].name(), Some("p"));
    }

    #[test]
    fn broken_yaml_names_the_file_and_document() {
        let e = parse("f.yaml", "a: 1\n---\na: [\n").expect_err("broken");
        assert!(e.to_string().contains("f.yaml: document 1"), "{e}");
    }
}
