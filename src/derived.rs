//! The manifest of a derived file, one record type for every tool that derives files from raw ones:
//! pm-normalize's `pmarchive.normalize_manifest/1` (docs/ORDERBOOK_SCHEMA.md) and pm-tradeset's
//! `pmarchive.tradeset_manifest/1` (docs/TRADES.md). It names the tool and its version, the inputs
//! (hashed before they are read, so it describes the bytes the output was derived from), the output
//! with its row count and row schema, the options and the tool's summary counts, plus the tool's own
//! keys ([`DerivedManifest::extra`]).
//!
//! Use: [`Derivation::start`] before reading the inputs, [`Derivation::finish`] once the output is
//! written, then [`DerivedManifest::write`].

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{cli, clock, jsonl, util};

/// The schema of pm-normalize's manifest.
pub const NORMALIZE_SCHEMA: &str = "pmarchive.normalize_manifest/1";
/// The schema of pm-tradeset's manifest.
pub const TRADESET_SCHEMA: &str = "pmarchive.tradeset_manifest/1";

/// A file as it was read or written: its path (as given), size and sha256 (lowercase hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashedFile {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

impl HashedFile {
    /// Hashes the file at `path` (streamed).
    pub fn of(path: &Path) -> io::Result<HashedFile> {
        let (sha256, bytes) = util::sha256_file(path)?;
        Ok(HashedFile { path: path.to_path_buf(), bytes, sha256 })
    }
}

/// A derived file written: the file, how many rows it holds and their schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    #[serde(flatten)]
    pub file: HashedFile,
    pub rows: u64,
    pub schema: String,
}

impl OutputFile {
    /// Hashes the output at `path`, which holds `rows` rows of `schema`.
    pub fn of(path: &Path, rows: u64, schema: &str) -> io::Result<OutputFile> {
        Ok(OutputFile { file: HashedFile::of(path)?, rows, schema: schema.to_string() })
    }
}

/// The manifest of a derived file. `O` is the tool's options, `S` its summary counts, `X` its own
/// keys, written at the top level beside the others (pm-normalize: [`NormalizeExtra`], pm-tradeset:
/// `tradeset::ManifestExtra`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DerivedManifest<O, S, X> {
    pub schema: String,
    pub tool: String,
    pub tool_version: String,
    pub started_at_utc: String,
    pub finished_at_utc: String,
    pub host: String,
    pub options: O,
    /// Every file read, hashed before it was read.
    pub inputs: Vec<HashedFile>,
    pub outputs: Vec<OutputFile>,
    pub summary: S,
    #[serde(flatten)]
    pub extra: X,
}

impl<O: Serialize, S: Serialize, X: Serialize> DerivedManifest<O, S, X> {
    /// Writes the manifest atomically, pretty-printed with a final newline and every object's keys
    /// in sorted order (the order these manifests have had since the first was written).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let sorted = serde_json::to_value(self).map_err(io::Error::other)?;
        let mut text = serde_json::to_vec_pretty(&sorted).map_err(io::Error::other)?;
        text.push(b'\n');
        util::write_atomic(path, &text)
    }
}

/// The command-line rule of the deriving tools for their input files: each (but `-` = stdin) must
/// be a file that opens (a usage error, exit 2, when it is missing).
pub fn check_inputs<'a>(files: impl IntoIterator<Item = &'a PathBuf>) -> cli::Result<()> {
    for f in files.into_iter().filter(|f| f.as_os_str() != "-") {
        if !f.is_file() {
            return cli::usage(format!("no such file: {}", f.display()));
        }
        if let Err(e) = jsonl::open(f) {
            return Err(cli::Error::Msg(format!("cannot read {}: {e}", f.display())));
        }
    }
    Ok(())
}

/// The command-line rule of `--manifest`: it needs `-o PATH` and FILE arguments (stdin cannot be
/// hashed).
pub fn check_manifest_args(manifest: Option<&Path>, output: Option<&Path>, files: &[PathBuf]) -> cli::Result<()> {
    if manifest.is_some() && (output.is_none() || files.is_empty() || files.iter().any(|f| f.as_os_str() == "-")) {
        return cli::usage("--manifest needs -o PATH and FILE arguments (stdin cannot be hashed)");
    }
    Ok(())
}

/// pm-normalize's own manifest key: the `--markets` files and what they gave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NormalizeExtra {
    pub markets: Vec<MarketsFile>,
}

/// One `--markets` file of pm-normalize: the tokens learnt from it and the lines skipped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketsFile {
    pub path: PathBuf,
    pub tokens: usize,
    pub skipped_lines: usize,
}

/// A derived file in the making: which tool, when it started, and its inputs as they were before
/// they were read.
#[derive(Clone, Debug)]
pub struct Derivation {
    schema: &'static str,
    tool: &'static str,
    started_at_utc: String,
    inputs: Vec<HashedFile>,
}

impl Derivation {
    /// Starts a derivation by `tool` whose manifest has `schema`: notes the time and hashes every
    /// input (call it before reading them).
    pub fn start<'a>(
        schema: &'static str,
        tool: &'static str,
        inputs: impl IntoIterator<Item = &'a PathBuf>,
    ) -> io::Result<Derivation> {
        let started_at_utc = clock::fmt_micros(clock::now());
        let inputs = inputs.into_iter().map(|p| HashedFile::of(p)).collect::<io::Result<_>>()?;
        Ok(Derivation { schema, tool, started_at_utc, inputs })
    }

    /// The manifest of the finished derivation (its output written and hashed: `output`).
    pub fn finish<O, S, X>(self, options: O, output: OutputFile, summary: S, extra: X) -> DerivedManifest<O, S, X> {
        DerivedManifest {
            schema: self.schema.to_string(),
            tool: self.tool.to_string(),
            tool_version: crate::VERSION.to_string(),
            started_at_utc: self.started_at_utc,
            finished_at_utc: clock::fmt_micros(clock::now()),
            host: util::hostname(),
            options,
            inputs: self.inputs,
            outputs: vec![output],
            summary,
            extra,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed manifest writes the keys, JSON types and key order of the `json!` documents it
    /// replaced: top-level keys sorted, the tool's own keys among them, outputs flattened.
    #[test]
    fn writes_the_documented_keys_sorted() {
        let dir = std::env::temp_dir().join(format!("pm-derived-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (input, output, man) = (dir.join("in.jsonl"), dir.join("out.jsonl"), dir.join("m.json"));
        std::fs::write(&input, b"{}\n").unwrap();
        std::fs::write(&output, b"{\"a\":1}\n{\"a\":2}\n").unwrap();
        let d = Derivation::start(NORMALIZE_SCHEMA, "pm-normalize", [&input]).unwrap();
        let extra = NormalizeExtra { markets: vec![MarketsFile { path: "m".into(), tokens: 2, skipped_lines: 0 }] };
        let summary = serde_json::json!({"z": 1, "a": 2});
        let m =
            d.finish(serde_json::json!({"depth": null}), OutputFile::of(&output, 2, "s/1").unwrap(), summary, extra);
        m.write(&man).unwrap();
        let text = std::fs::read_to_string(&man).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let want = [
            "finished_at_utc",
            "host",
            "inputs",
            "markets",
            "options",
            "outputs",
            "schema",
            "started_at_utc",
            "summary",
            "tool",
            "tool_version",
        ];
        assert_eq!(keys, want);
        assert!(text.find("\"finished_at_utc\"").unwrap() < text.find("\"tool_version\"").unwrap(), "{text}");
        assert!(text.find("\"a\": 2").unwrap() < text.find("\"z\": 1").unwrap(), "nested keys sorted: {text}");
        assert!(text.ends_with("}\n"));
        assert_eq!(v["outputs"][0]["rows"], 2);
        assert_eq!(v["outputs"][0]["bytes"], 16);
        assert_eq!(v["outputs"][0]["schema"], "s/1");
        assert_eq!(v["inputs"][0]["bytes"], 3);
        assert_eq!(v["inputs"][0]["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(v["markets"][0]["skipped_lines"], 0);
        type Back = DerivedManifest<serde_json::Value, serde_json::Value, NormalizeExtra>;
        assert_eq!(serde_json::from_value::<Back>(v).unwrap(), m);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
