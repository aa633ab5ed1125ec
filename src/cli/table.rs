//! kubectl-style aligned columns: upper-case headers, columns padded to their widest cell and
//! separated by three spaces, the last column not padded.

use std::io::Write;

/// Writes `headers` and `rows` as aligned columns.
pub fn write_table<const N: usize>(
    out: &mut dyn Write,
    headers: &[&str; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = headers.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                text.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 3));
            }
        }
        text
    };
    writeln!(out, "{}", line(headers.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell() {
        let mut out = Vec::new();
        write_table(
            &mut out,
            &["NAME", "VALUE"],
            &[["a".into(), "1".into()], ["longer".into(), "22".into()]],
        )
        .expect("writes");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "NAME     VALUE\na        1\nlonger   22\n"
        );
    }
}
