//! Input tables for the fitter: a CSV or Parquet file read into named columns.
//!
//! Owns only reading and column lookup (with "did you mean" errors that list the columns that
//! exist). CSV is parsed here (RFC 4180 quoting) so the build does not need polars' CSV
//! reader; Parquet is read with polars.

use std::path::{Path, PathBuf};

use crate::bail_user;
use crate::error::{nearest, user};

#[derive(Debug, Clone)]
pub enum Values {
    Num(Vec<Option<f64>>),
    Str(Vec<Option<String>>),
}

#[derive(Debug, Clone)]
pub struct Table {
    pub path: PathBuf,
    pub names: Vec<String>,
    pub columns: Vec<Values>,
    pub rows: usize,
}

impl Table {
    pub fn read(path: &Path) -> anyhow::Result<Table> {
        if path.is_dir() {
            bail_user!(
                "--input {} is a folder; --input takes a CSV or Parquet file (a sweep's results folder goes without --input)",
                path.display()
            );
        }
        if !path.is_file() {
            bail_user!("input file {} does not exist", path.display());
        }
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let t = match ext.as_str() {
            "csv" => read_csv(path)?,
            "parquet" | "pq" => read_parquet(path)?,
            _ => bail_user!(
                "input file {}: unknown format; use a .csv or .parquet file",
                path.display()
            ),
        };
        if t.rows == 0 {
            bail_user!("input file {} has no data rows", path.display());
        }
        Ok(t)
    }

    fn index(&self, name: &str, flag: &str) -> anyhow::Result<usize> {
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return Ok(i);
        }
        let hint = nearest(name, self.names.iter().map(String::as_str))
            .map(|n| format!(" Did you mean `{n}`?"))
            .unwrap_or_default();
        Err(user(format!(
            "{}: no column `{name}` (from {flag}).{hint} Columns in this file: {}",
            self.path.display(),
            self.names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// A numeric column (string cells that parse as numbers are accepted).
    pub fn numeric(&self, name: &str, flag: &str) -> anyhow::Result<Vec<Option<f64>>> {
        let i = self.index(name, flag)?;
        Ok(match &self.columns[i] {
            Values::Num(v) => v.clone(),
            Values::Str(v) => {
                let parsed: Vec<Option<f64>> = v
                    .iter()
                    .map(|s| s.as_deref().and_then(|s| s.trim().parse().ok()))
                    .collect();
                if parsed.iter().all(Option::is_none) {
                    bail_user!(
                        "{}: column `{name}` (from {flag}) holds text, not numbers",
                        self.path.display()
                    );
                }
                parsed
            }
        })
    }

    /// Row `row` (0-based) of a numeric column read by [`Self::numeric`] as a positive finite
    /// number, or a user error naming the file, the row (1-based), the quantity (`label`) and
    /// its column.
    pub fn positive(
        &self,
        values: &[Option<f64>],
        row: usize,
        label: &str,
        column: &str,
    ) -> anyhow::Result<f64> {
        match values[row] {
            Some(v) if v.is_finite() && v > 0.0 => Ok(v),
            Some(v) => bail_user!(
                "{}: row {}: {label} = {v} (column `{column}`) is not a positive finite number; fix or remove the row",
                self.path.display(),
                row + 1
            ),
            None => bail_user!(
                "{}: row {}: {label} (column `{column}`) is empty or not a number; fix or remove the row",
                self.path.display(),
                row + 1
            ),
        }
    }

    /// A column as text.
    pub fn text(&self, name: &str, flag: &str) -> anyhow::Result<Vec<Option<String>>> {
        let i = self.index(name, flag)?;
        Ok(match &self.columns[i] {
            Values::Str(v) => v.clone(),
            Values::Num(v) => v.iter().map(|x| x.map(|x| x.to_string())).collect(),
        })
    }

    /// Rows where any text cell contains `needle`.
    pub fn rows_matching(&self, needle: &str) -> Vec<bool> {
        let mut out = vec![false; self.rows];
        for col in &self.columns {
            if let Values::Str(v) = col {
                for (o, cell) in out.iter_mut().zip(v) {
                    *o |= cell.as_deref().is_some_and(|c| c.contains(needle));
                }
            }
        }
        out
    }
}

/// Split one CSV record (RFC 4180: quoted fields, doubled quotes).
fn split_record(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn read_csv(path: &Path) -> anyhow::Result<Table> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| user(format!("cannot read {}: {e}", path.display())))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        bail_user!("input file {} is empty", path.display());
    };
    let names: Vec<String> = split_record(header)
        .into_iter()
        .map(|s| s.trim().to_string())
        .collect();
    let mut cells: Vec<Vec<Option<String>>> = vec![Vec::new(); names.len()];
    for (k, line) in lines.enumerate() {
        let rec = split_record(line);
        if rec.len() != names.len() {
            bail_user!(
                "{}: line {} has {} fields, the header has {}",
                path.display(),
                k + 2,
                rec.len(),
                names.len()
            );
        }
        for (col, v) in cells.iter_mut().zip(rec) {
            let v = v.trim().to_string();
            col.push(if v.is_empty() { None } else { Some(v) });
        }
    }
    let rows = cells.first().map_or(0, Vec::len);
    let columns = cells
        .into_iter()
        .map(|col| {
            let nums: Vec<Option<f64>> = col
                .iter()
                .map(|c| c.as_deref().and_then(parse_num))
                .collect();
            let all_num = col
                .iter()
                .zip(&nums)
                .all(|(c, n)| c.is_none() || n.is_some());
            if all_num {
                Values::Num(nums)
            } else {
                Values::Str(col)
            }
        })
        .collect();
    Ok(Table {
        path: path.to_path_buf(),
        names,
        columns,
        rows,
    })
}

fn parse_num(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "nan" => Some(f64::NAN),
        "inf" | "+inf" | "infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

fn read_parquet(path: &Path) -> anyhow::Result<Table> {
    use polars::prelude::*;
    let file = std::fs::File::open(path)
        .map_err(|e| user(format!("cannot open {}: {e}", path.display())))?;
    let df = ParquetReader::new(file).finish().map_err(|e| {
        user(format!(
            "{} is not a readable Parquet file ({e}); if it is a CSV, name it .csv; if it was cut short (an interrupted copy or download), copy it again",
            path.display()
        ))
    })?;
    let mut names = Vec::new();
    let mut columns = Vec::new();
    for col in df.columns() {
        // A table is flat: nested columns (runs.parquet's eval_loss_by_position list) are
        // not columns a flag can name, so they are left out.
        if col.dtype().is_nested() {
            continue;
        }
        names.push(col.name().to_string());
        if col.dtype().is_primitive_numeric() {
            let c = col.cast(&DataType::Float64)?;
            columns.push(Values::Num(c.f64()?.iter().collect()));
        } else {
            let c = col.cast(&DataType::String)?;
            columns.push(Values::Str(
                c.str()?.iter().map(|s| s.map(str::to_string)).collect(),
            ));
        }
    }
    Ok(Table {
        path: path.to_path_buf(),
        names,
        columns,
        rows: df.height(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        assert_eq!(split_record(r#""a,b",c,"d""e""#), vec!["a,b", "c", "d\"e"]);
    }
}
