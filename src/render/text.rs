/*!
Text that fits the terminal: display widths (by `unicode-width`, so `‖`, `–` and `h̃` count as what they
occupy) and a greedy word wrap for prose. Commands meant for copying are never passed through [`wrap`]:
they go on lines of their own, whole.
*/

use unicode_width::UnicodeWidthStr;

/// The number of terminal columns `s` occupies (ANSI colour escapes excluded).
pub fn width(s: &str) -> usize {
    if !s.contains('\u{1b}') {
        return UnicodeWidthStr::width(s);
    }
    // Strip `ESC [ … letter` sequences (the only ones the tables emit).
    let mut plain = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    UnicodeWidthStr::width(plain.as_str())
}

/// The widest line of `s`.
pub fn max_line_width(s: &str) -> usize {
    s.lines().map(width).max().unwrap_or(0)
}

/// Greedy word wrap of every line of `text` at `cols` columns; continuation lines are indented by
/// `indent` spaces. A word longer than the line stays whole on a line of its own.
pub fn wrap(text: &str, cols: usize, indent: usize) -> String {
    let mut out = String::new();
    for (i, para) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut line = 0;
        for word in para.split(' ').filter(|w| !w.is_empty()) {
            let w = width(word);
            if line > 0 && line + 1 + w > cols {
                out.push('\n');
                out.extend(std::iter::repeat_n(' ', indent));
                line = indent;
            } else if line > 0 {
                out.push(' ');
                line += 1;
            }
            out += word;
            line += w;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_word_boundaries_and_counts_display_width() {
        assert_eq!(wrap("aaa bbb ccc ddd", 7, 0), "aaa bbb\nccc ddd");
        assert_eq!(wrap("aaa bbb ccc", 7, 2), "aaa bbb\n  ccc");
        assert_eq!(width("‖h̃‖ – x"), 7);
        assert_eq!(width("\u{1b}[1;31mab\u{1b}[0m"), 2);
        assert!(max_line_width(&wrap(&"word ".repeat(40), 30, 0)) <= 30);
    }
}
