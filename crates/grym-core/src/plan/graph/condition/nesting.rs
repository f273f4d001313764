//! How deep a `when` expression nests, measured on its tokens before the CEL
//! parser sees it.
//!
//! The parser, our walk of its tree, evaluation and dropping the tree all
//! recurse once per level, so a deep enough expression overflows the
//! thread's stack and aborts the process. This scan does not recurse: it
//! reads the source once, keeping one frame per open bracket, and bounds
//! the depth of the tree the parser would build, the way cel-go bounds its
//! parser (`maxRecursionDepth`) and Kubernetes its expressions.
//!
//! The measure is an upper bound, never an exact depth: within one bracket
//! and between two commas, every member access, index, call, unary or
//! binary operator and ternary may nest one level (a chain `a.b.c` or a sum
//! `1+1+1` nests one level per link, as the parser builds it), each bracket
//! is one more, and `&&` and `||` only nest by the logarithm of their terms
//! because the parser balances their chains. String literals, comments and
//! escaped names are skipped, so a `'('` in a string is not nesting.

/// The depth of `source` by the measure above; 1 for a single name or
/// literal, 0 for an empty source.
pub(super) fn depth(source: &str) -> usize {
    let bytes = source.as_bytes();
    let mut root = Frame::default();
    let mut open: Vec<Frame> = Vec::new();
    let mut deepest = 0;
    // Whether the last token ends an operand, so that `(` or `[` after it is
    // a call or an index rather than a group or a list.
    let mut after_operand = false;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let next = bytes.get(i + 1).copied();
        let frame = match open.last_mut() {
            Some(frame) => frame,
            None => &mut root,
        };
        match byte {
            b' ' | b'\t' | b'\r' | b'\n' | b'\x0c' => {
                i += 1;
                continue;
            }
            b'/' if next == Some(b'/') => {
                i = skip_line(bytes, i);
                continue;
            }
            b'\'' | b'"' => {
                i = skip_string(bytes, i, false);
                frame.operand();
                after_operand = true;
                continue;
            }
            b'`' => {
                i = bytes[i + 1..]
                    .iter()
                    .position(|&b| b == b'`')
                    .map_or(bytes.len(), |end| i + end + 2);
                frame.operand();
                after_operand = true;
                continue;
            }
            b'(' | b'[' | b'{' => {
                if after_operand {
                    frame.link();
                }
                open.push(Frame::default());
                after_operand = false;
            }
            b')' | b']' | b'}' => {
                // A closer with nothing open is a syntax error the parser
                // reports; it nests nothing.
                if let Some(closed) = open.pop() {
                    let inner = closed.depth() + 1;
                    deepest = deepest.max(inner);
                    open.last_mut().unwrap_or(&mut root).child(inner);
                }
                after_operand = true;
            }
            b',' => {
                frame.element();
                after_operand = false;
            }
            b'?' => {
                frame.ternary();
                after_operand = false;
            }
            b':' => {
                frame.clause();
                after_operand = false;
            }
            b'&' | b'|' if next == Some(byte) => {
                frame.logical(byte == b'|');
                after_operand = false;
                i += 2;
                continue;
            }
            b'=' | b'!' | b'<' | b'>' if next == Some(b'=') => {
                frame.link();
                after_operand = false;
                i += 2;
                continue;
            }
            b'.' if next.is_some_and(|b| b.is_ascii_digit()) && !after_operand => {
                i = skip_number(bytes, i);
                frame.operand();
                after_operand = true;
                continue;
            }
            b'0'..=b'9' => {
                i = skip_number(bytes, i);
                frame.operand();
                after_operand = true;
                continue;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let end = bytes[i..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                    .map_or(bytes.len(), |len| i + len);
                let word = &bytes[i..end];
                if matches!(bytes.get(end), Some(b'\'' | b'"')) && is_string_prefix(word) {
                    let raw = word.iter().any(|b| b.eq_ignore_ascii_case(&b'r'));
                    i = skip_string(bytes, end, raw);
                    frame.operand();
                    after_operand = true;
                } else if word == b"in" {
                    frame.link();
                    after_operand = false;
                    i = end;
                } else {
                    frame.operand();
                    after_operand = true;
                    i = end;
                }
                continue;
            }
            // `.` (a member), `+ - * / %`, `! < > =` alone: each may nest one
            // level. Anything else is a syntax error the parser reports;
            // counting it as a link keeps the measure an upper bound.
            _ => {
                frame.link();
                after_operand = false;
            }
        }
        i += 1;
    }
    // Brackets left open are closed where the source ends.
    while let Some(closed) = open.pop() {
        let inner = closed.depth() + 1;
        deepest = deepest.max(inner);
        open.last_mut().unwrap_or(&mut root).child(inner);
    }
    deepest.max(root.depth())
}

/// What is known of one bracket's content (or of the whole source).
#[derive(Debug, Default)]
struct Frame {
    /// Links in the current clause: the run of tokens between two logical
    /// operators, ternary marks or commas.
    links: usize,
    /// Whether the current clause has an operand.
    has_operand: bool,
    /// The deepest bracket closed in the current clause.
    child: usize,
    /// The deepest clause of the current element.
    clause: usize,
    /// `?` seen in the current element: a chain of ternaries nests.
    ternaries: usize,
    /// `||` terms of the current element.
    or_terms: usize,
    /// `&&` terms of the current `||` term, and the most of any term.
    and_terms: usize,
    most_and_terms: usize,
    /// The deepest element of the bracket so far.
    element: usize,
}

impl Frame {
    fn operand(&mut self) {
        self.has_operand = true;
    }

    fn link(&mut self) {
        self.links += 1;
    }

    fn child(&mut self, depth: usize) {
        self.has_operand = true;
        self.child = self.child.max(depth);
    }

    /// Ends the current clause.
    fn clause(&mut self) {
        let depth = self.links + self.child.max(usize::from(self.has_operand));
        self.clause = self.clause.max(depth);
        self.links = 0;
        self.child = 0;
        self.has_operand = false;
    }

    fn ternary(&mut self) {
        self.clause();
        self.ternaries += 1;
    }

    fn logical(&mut self, or: bool) {
        self.clause();
        self.and_terms += 1;
        if or {
            self.most_and_terms = self.most_and_terms.max(self.and_terms);
            self.and_terms = 0;
            self.or_terms += 1;
        }
    }

    /// Ends the current element (at a comma or the closing bracket).
    fn element(&mut self) {
        self.clause();
        let and_terms = self.most_and_terms.max(self.and_terms + 1);
        let or_terms = self.or_terms + 1;
        let depth = self.clause + self.ternaries + log2_ceil(or_terms) + log2_ceil(and_terms);
        self.element = self.element.max(depth);
        *self = Self {
            element: self.element,
            ..Self::default()
        };
    }

    /// The depth of the bracket's content, ending it.
    fn depth(mut self) -> usize {
        self.element();
        self.element
    }
}

/// The depth of a balanced tree of `terms` leaves.
pub(super) fn log2_ceil(terms: usize) -> usize {
    // `terms` is at least 1; 1 term nests nothing.
    (usize::BITS - (terms.max(1) - 1).leading_zeros()) as usize
}

/// `b`, `r` and their pairs, in either case: what may prefix a string.
fn is_string_prefix(word: &[u8]) -> bool {
    match word {
        [one] => matches!(one.to_ascii_lowercase(), b'b' | b'r'),
        [a, b] => {
            let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
            (a, b) == (b'b', b'r') || (a, b) == (b'r', b'b')
        }
        _ => false,
    }
}

/// The index after the string literal whose quote is at `start`; the end
/// of the source if it is not closed (the parser reports that).
fn skip_string(bytes: &[u8], start: usize, raw: bool) -> usize {
    let quote = bytes[start];
    let triple = bytes.get(start..start + 3) == Some(&[quote; 3][..]);
    let mut i = start + if triple { 3 } else { 1 };
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'\\' && !raw {
            i += 2;
            continue;
        }
        if triple {
            if bytes.get(i..i + 3) == Some(&[quote; 3][..]) {
                return i + 3;
            }
        } else if byte == quote || byte == b'\n' || byte == b'\r' {
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// The index after the number at `start`: digits, a fraction, an exponent
/// with its sign, a hex prefix and a `u` suffix.
fn skip_number(bytes: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < bytes.len() {
        let byte = bytes[i];
        let exponent_sign = matches!(byte, b'+' | b'-')
            && i > start
            && matches!(bytes[i - 1], b'e' | b'E')
            && !bytes[start..i].starts_with(b"0x");
        if byte.is_ascii_alphanumeric() || byte == b'.' || exponent_sign {
            // A dot followed by a letter is a member access (`1.a`).
            if byte == b'.' && !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                break;
            }
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// The index of the line end after a `//` comment at `start`.
fn skip_line(bytes: &[u8], start: usize) -> usize {
    bytes[start..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |end| start + end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_names_and_links_count_one_level_each() {
        assert_eq!(depth(""), 0);
        assert_eq!(depth("input"), 1);
        assert_eq!(depth("input.a"), 2);
        assert_eq!(depth("input.a.b == 1"), 4);
        assert_eq!(depth("1 + 2 + 3"), 3);
        assert_eq!(depth("input[0][0]"), 4);
        assert_eq!(depth("size(input)"), 3);
    }

    #[test]
    fn logical_chains_count_by_their_balanced_depth() {
        assert_eq!(depth("a && b"), 2);
        assert_eq!(depth("a && b && c && d"), 3);
        assert_eq!(depth(&vec!["a"; 1024].join(" && ")), 11);
        assert_eq!(depth("a.b > 1 || c.d > 1 && e"), 3 + 1 + 1);
    }

    #[test]
    fn brackets_nest_and_commas_separate() {
        assert_eq!(depth("((a))"), 3);
        assert_eq!(depth("[a, b.c, d]"), 3);
        assert_eq!(depth("f(a.b.c, d)"), 1 + 1 + 3);
        assert_eq!(depth("{'k': a.b}"), 3);
        assert_eq!(depth("a ? b : c ? d : e"), 3);
    }

    #[test]
    fn strings_comments_and_numbers_are_not_nesting() {
        assert_eq!(depth("'((((' == input"), 2);
        assert_eq!(depth(r#""a\"((" == input"#), 2);
        assert_eq!(depth("r'\\' == input"), 2);
        assert_eq!(depth("'''a ' (( ''' == input"), 2);
        assert_eq!(depth("b\"[[\" == input"), 2);
        assert_eq!(depth("input // ((((\n"), 1);
        assert_eq!(depth("1.5e+3 == 2"), 2);
        assert_eq!(depth("0x1Fu == .5"), 2);
    }

    #[test]
    fn unbalanced_brackets_still_count() {
        assert_eq!(depth("(((a"), 4);
        assert_eq!(depth("a)))"), 1);
        assert_eq!(depth("'unclosed (((("), 1);
    }
}
