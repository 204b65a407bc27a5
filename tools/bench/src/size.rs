//! Package sizes: each function's `bootstrap` and its deployment zip, as `cargo lambda build`
//! leaves them.

use std::path::Path;

#[derive(Clone, Debug)]
pub struct SizeRow {
    pub name: String,
    pub binary_bytes: Option<u64>,
    pub zip_bytes: Option<u64>,
}

pub fn measure(names: &[String], bin_dir: &Path, lambda_dir: Option<&Path>) -> Vec<SizeRow> {
    names
        .iter()
        .map(|name| {
            let size = |path: &Path| std::fs::metadata(path).ok().map(|m| m.len());
            SizeRow {
                name: name.clone(),
                binary_bytes: size(&bin_dir.join(name)),
                zip_bytes: lambda_dir.and_then(|dir| size(&dir.join(name).join("bootstrap.zip"))),
            }
        })
        .collect()
}

pub fn mb(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / 1_000_000.0)
}
