//! Limits on a YAML file before the parser sees it: its size and how deep
//! it nests. serde_yaml's parser takes time quadratic in the nesting
//! depth, so a small file of `[[[[...` would hang a stage or the runner.
//! Shared by the pipeline runner and the stage configs (mat-core includes
//! this file), which depend on no common crate.

/// The largest YAML file read, and the deepest `[`/`{` nesting.
pub const MAX_YAML_BYTES: usize = 4 << 20;
pub const MAX_YAML_DEPTH: usize = 64;

/// `Some((line, column, what))` when `text` is larger or nested deeper than
/// a pipeline may be; checked before the YAML parser sees it. Quoted
/// strings and comments are skipped, so brackets in commands do not count.
pub fn yaml_too_large(text: &str) -> Option<(usize, usize, String)> {
    if text.len() > MAX_YAML_BYTES {
        return Some((
            1,
            1,
            format!(
                "the file has {} bytes; a file read here may have at most {MAX_YAML_BYTES}",
                text.len()
            ),
        ));
    }
    let mut depth = 0usize;
    for (i, line) in text.lines().enumerate() {
        let mut quote: Option<char> = None;
        // Block indentation counts too: two spaces per level at least.
        let indent = line.len() - line.trim_start_matches(' ').len();
        if indent / 2 > MAX_YAML_DEPTH * 4 {
            return Some((i + 1, 1, format!("indented {indent} spaces deep")));
        }
        for (j, c) in line.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '#') if j == 0 || line[..j].ends_with(' ') => break,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_YAML_DEPTH {
                        return Some((
                            i + 1,
                            j + 1,
                            format!("`[`/`{{` nested more than {MAX_YAML_DEPTH} deep"),
                        ));
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}
