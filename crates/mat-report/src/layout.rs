//! One layout rule for every table: a column this profile did not run
//! (every cell "not run in this profile (PAPER)") leaves the measured table
//! and goes to a second table of the paper's numbers alone, so the cells a
//! profile measured are not drowned among cells it never could. A never-run
//! column the paper has no number for (every cell "not run in this
//! profile") is left out.

const UNRUN: &str = "not run in this profile (";
const UNRUN_NO_PAPER: &str = "not run in this profile";

fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

fn row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

/// Rewrites the first Markdown table of `md` so that its never-run columns
/// follow it as a table of the paper's numbers; `md` comes back as it was
/// when every column has a measurement.
pub fn split_unrun_columns(md: &str) -> String {
    let lines: Vec<&str> = md.lines().collect();
    let Some(start) = lines.iter().position(|l| l.starts_with('|')) else {
        return md.to_string();
    };
    let end = lines[start..]
        .iter()
        .position(|l| !l.starts_with('|'))
        .map_or(lines.len(), |n| start + n);
    if end - start < 3 {
        return md.to_string();
    }
    let header = cells(lines[start]);
    let body: Vec<Vec<String>> = lines[start + 2..end].iter().map(|l| cells(l)).collect();
    let unrun: Vec<usize> = (1..header.len())
        .filter(|&c| {
            body.iter()
                .all(|r| r.get(c).is_some_and(|x| x.starts_with(UNRUN)))
        })
        .collect();
    let dropped: Vec<usize> = (1..header.len())
        .filter(|&c| {
            body.iter()
                .all(|r| r.get(c).is_some_and(|x| x == UNRUN_NO_PAPER))
        })
        .collect();
    if unrun.is_empty() && dropped.is_empty() {
        return md.to_string();
    }
    let kept: Vec<usize> = (0..header.len())
        .filter(|c| !unrun.contains(c) && !dropped.contains(c))
        .collect();
    let pick = |r: &[String], cols: &[usize]| -> Vec<String> {
        cols.iter()
            .map(|&c| r.get(c).cloned().unwrap_or_default())
            .collect()
    };
    let mut out = String::new();
    for l in &lines[..start] {
        out.push_str(l);
        out.push('\n');
    }
    let table = |out: &mut String, cols: &[usize], paper_only: bool| {
        out.push_str(&row(&pick(&header, cols)));
        out.push_str(&format!("|{}\n", "---|".repeat(cols.len())));
        for r in &body {
            let mut v = pick(r, cols);
            if paper_only {
                for x in v.iter_mut().skip(1) {
                    *x = x
                        .strip_prefix(UNRUN)
                        .and_then(|p| p.strip_suffix(')'))
                        .unwrap_or(x)
                        .to_string();
                }
            }
            out.push_str(&row(&v));
        }
    };
    if kept.len() > 1 {
        table(&mut out, &kept, false);
    }
    if !unrun.is_empty() {
        if kept.len() > 1 {
            out.push('\n');
        }
        out.push_str(
            "The paper's numbers for what this profile does not run (the paper profile runs it):\n\n",
        );
        let mut paper_cols = vec![0];
        paper_cols.extend(&unrun);
        table(&mut out, &paper_cols, true);
    }
    for l in &lines[end..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unrun_columns_move_to_a_table_of_the_papers_numbers() {
        let md = "# T\n\nEach cell: ours (paper).\n\n| method | C clean | M clean |\n|---|---|---|\n| AT | not run in this profile (80.9) | 95.1 (99.3) |\n| MAT | not run in this profile (83.8) | 92.3 (99.3) |\n\nSettings:\n";
        let out = split_unrun_columns(md);
        assert_eq!(
            out,
            "# T\n\nEach cell: ours (paper).\n\n| method | M clean |\n|---|---|\n| AT | 95.1 (99.3) |\n| MAT | 92.3 (99.3) |\n\nThe paper's numbers for what this profile does not run (the paper profile runs it):\n\n| method | C clean |\n|---|---|\n| AT | 80.9 |\n| MAT | 83.8 |\n\nSettings:\n"
        );
        // A never-run column without a paper number is left out.
        let md = "| m | C audit | M audit |\n|---|---|---|\n| x | not run in this profile | ok |\n\nNote\n";
        assert_eq!(
            split_unrun_columns(md),
            "| m | M audit |\n|---|---|\n| x | ok |\n\nNote\n"
        );
        // Every column measured: unchanged.
        let full = "| m | a |\n|---|---|\n| x | 1 (2) |\n";
        assert_eq!(split_unrun_columns(full), full);
    }
}
