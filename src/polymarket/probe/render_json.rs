//! The machine-readable report (`polymarket_public_sources_probe_v1.json`): the [`Report`] as
//! pretty-printed JSON, one trailing newline. Reading it back gives the same [`Report`].

use std::io;

use super::report::Report;

/// The JSON document.
pub fn render(r: &Report) -> io::Result<Vec<u8>> {
    let mut j = serde_json::to_vec_pretty(r).map_err(io::Error::other)?;
    j.push(b'\n');
    Ok(j)
}
