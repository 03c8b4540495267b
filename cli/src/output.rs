//! How results reach the terminal: aligned tables for people, JSON and YAML for scripts.
//! Every command builds a serde view struct; this module only renders it.

use std::io::Write;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// The `--output` choices.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns for reading.
    #[default]
    Table,
    /// Pretty-printed JSON.
    Json,
    /// YAML.
    Yaml,
}

/// A result a command prints: serde gives JSON and YAML, `to_table` the human form.
pub trait Render: Serialize {
    /// The text for `--output table`, ending in a newline.
    fn to_table(&self) -> String;
}

/// Renders `value` in `format`; the text ends in a newline.
pub fn render<T: Render>(value: &T, format: OutputFormat) -> anyhow::Result<String> {
    match format {
        OutputFormat::Table => Ok(value.to_table()),
        OutputFormat::Json => {
            let mut text = serde_json::to_string_pretty(value).context("cannot encode json")?;
            text.push('\n');
            Ok(text)
        }
        OutputFormat::Yaml => serde_saphyr::to_string(value).context("cannot encode yaml"),
    }
}

/// Writes `value` to stdout. Write errors (a closed pipe, say) come back as `io::Error` in
/// the chain so `main` can tell them apart.
pub fn emit<T: Render>(value: &T, format: OutputFormat) -> anyhow::Result<()> {
    let text = render(value, format)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Columns aligned on the widest cell. Cells are cleaned of control characters first,
/// because names and messages come from the server and must not drive the terminal.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: Vec<&'static str>) -> Self {
        Self {
            headers,
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.iter().map(|cell| printable(cell)).collect());
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header_cells: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for cells in std::iter::once(&header_cells).chain(&self.rows) {
            let mut line = String::new();
            for (index, width) in widths.iter().enumerate() {
                let cell = cells.get(index).map_or("", String::as_str);
                line.push_str(cell);
                if index + 1 < columns {
                    let pad = width.saturating_sub(cell.chars().count()) + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            // The last column is not padded, but an empty last cell would leave spaces.
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `label:  value` lines with the values aligned, for one object.
#[derive(Debug, Default)]
pub struct Fields {
    pairs: Vec<(&'static str, String)>,
}

impl Fields {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn field(mut self, label: &'static str, value: impl AsRef<str>) -> Self {
        self.pairs.push((label, printable(value.as_ref())));
        self
    }

    pub fn render(&self) -> String {
        let width = self
            .pairs
            .iter()
            .map(|(label, _)| label.chars().count() + 1)
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (label, value) in &self.pairs {
            let key = format!("{label}:");
            let line = format!("{key:<width$}  {value}");
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Replaces control characters (newlines, escapes) with spaces so outside text stays on
/// its line and cannot move the cursor or recolour the terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A time for tables: RFC 3339 in UTC to the second; `-` when absent.
pub fn time_cell(time: Option<DateTime<Utc>>) -> String {
    time.map_or_else(|| "-".to_owned(), rfc3339)
}

pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A text cell; `-` when empty so the columns still read.
pub fn text_cell(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// A list cell: `a, b`; `-` when empty.
pub fn list_cell(items: &[String]) -> String {
    text_cell(&items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_leaves_no_trailing_space() {
        let mut table = Table::new(vec!["NAME", "ROLES", "NOTE"]);
        table.row(vec!["alice".into(), "admin".into(), "".into()]);
        table.row(vec!["bo".into(), "dev, ops".into(), "x".into()]);
        assert_eq!(
            table.render(),
            "NAME   ROLES     NOTE\n\
             alice  admin\n\
             bo     dev, ops  x\n"
        );
    }

    #[test]
    fn cells_cannot_carry_control_characters() {
        let mut table = Table::new(vec!["A"]);
        table.row(vec!["evil\n\x1b[31mred".into()]);
        assert_eq!(table.render(), "A\nevil  [31mred\n");
    }

    #[test]
    fn fields_align_values() {
        let text = Fields::new()
            .field("name", "ops")
            .field("description", "")
            .field("built-in", "no")
            .render();
        assert_eq!(text, "name:         ops\ndescription:\nbuilt-in:     no\n");
    }
}
